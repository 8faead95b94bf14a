"""Sim-vs-real validation: run a workload for real under AR and under policies, simulate the same
workload under the same policies, and say how far apart they are and why.

Steps (``specroll validate CONFIG.toml --out DIR``):
1. a cost profile measured on this device (``profile`` in the config, or ``"calibrate"``);
2. the real backend runs the workload under AR (no drafter) and each policy (with the drafter),
   ``repeats`` times each, interleaved so that slow drift of the machine hits every policy alike;
   on a CPU in float32 the outputs must be identical token for token (lossless by construction:
   checked); on a GPU / in bf16 their token agreement with AR is measured and reported
   (real_backend/_agreement.py: kernels differ in the low bits between verify and decode);
3. the drafter's match lengths are computed offline on the recorded trace, and the simulator
   replays that exact trace on one engine of the same batch size, under the same policies, with
   match-length acceptance (no training phase: the real run does not train);
4. per policy and step: makespan, decode iterations, accepted tokens per iteration, mean
   iteration time, and the predicted vs measured speedup over AR.

Where sim and real differ, the difference is split exactly into three terms (fractions of the
real makespan T_r = P_r + I_r t_r + O_r; the simulator's T_s = P_s + I_s t_s):
  iteration_count = (I_s - I_r) t_r / T_r       the simulator runs a different number of iterations
  iteration_time  = I_s (t_s - t_r) / T_r       each iteration is priced differently
  admission       = (P_s - P_r - O_r) / T_r     prefills, and host time between iterations
They sum to makespan_error = T_s / T_r - 1.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specroll.core.config import parse
from specroll.core.errors import SpecrollError
from specroll.core.fileio import atomic_path, read_toml, write_json
from specroll.core.progress import progress, say

BASELINE = "ar"


@dataclass
class PolicySpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    file: str | None = None
    label: str | None = None

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclass
class ValidateConfig:
    """One validation; see examples/validate-cpu.toml."""

    profile: str = "calibrate"
    """builtin profile name, a profile JSON, or "calibrate" (measure one first, on a grid sized to the
    workload: ~1.5 min on CPU)."""
    repeats: int = 3
    seed: int = 0
    workload: dict[str, Any] = field(default_factory=dict)
    """real_backend.RolloutConfig fields: model, device, prompts, samples, steps, max_new_tokens, ..."""
    drafter: str = "suffix"
    drafter_params: dict[str, Any] = field(default_factory=dict)
    policies: list[PolicySpec] = field(default_factory=list)
    file: str | None = None

    @classmethod
    def from_toml(cls, path: str | Path) -> ValidateConfig:
        return cls.from_dict(read_toml(path), file=str(path))

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, file: str | None = None) -> ValidateConfig:
        known = {"profile", "repeats", "seed", "workload", "drafter", "policies"}
        bad = sorted(set(d) - known)
        if bad:
            raise SpecrollError(f"unknown key '{bad[0]}'", file=file, field=bad[0],
                                fix=f"use keys among: {', '.join(sorted(known))}")
        drafter = d.get("drafter", {}) or {}
        if not isinstance(drafter, dict) or set(drafter) - {"name", "params"}:
            raise SpecrollError("[drafter] takes 'name' and 'params'", file=file, field="drafter",
                                fix='write [drafter] name = "suffix", params = {...}')
        pols = []
        for i, p in enumerate(d.get("policies", []) or []):
            if not isinstance(p, dict) or not ({"name", "file"} & set(p)) or set(p) - {"name", "params",
                                                                                       "file", "label"}:
                raise SpecrollError(f"policy #{i + 1} needs 'name' (+ 'params') or 'file' (+ 'label')",
                                    file=file, field=f"policies[{i}]",
                                    fix='write [[policies]] name = "das" or file = "best_policy.json"')
            pfile = p.get("file")
            if pfile is not None and file is not None and not Path(pfile).is_absolute():
                pfile = str(Path(file).parent / pfile)
            pols.append(PolicySpec(str(p.get("name", "")), dict(p.get("params", {}) or {}), pfile,
                                   p.get("label")))
        profile = str(d.get("profile", "calibrate"))
        if profile not in ("calibrate",) and profile.endswith(".json") and file is not None \
                and not Path(profile).is_absolute():
            profile = str(Path(file).parent / profile)
        cfg = cls(profile=profile, repeats=int(d.get("repeats", 3)), seed=int(d.get("seed", 0)),
                  workload=dict(d.get("workload", {}) or {}), drafter=str(drafter.get("name", "suffix")),
                  drafter_params=dict(drafter.get("params", {}) or {}), policies=pols, file=file)
        cfg.check()
        return cfg

    def check(self) -> None:
        f = self.file
        if self.repeats < 1:
            raise SpecrollError(f"repeats must be >= 1, got {self.repeats}", file=f, field="repeats",
                                fix="set repeats = 1 or more")
        if self.drafter == "none":
            raise SpecrollError("validation of speculation needs a drafter", file=f, field="drafter.name",
                                fix='use "suffix" or "ngram"')
        keys = [BASELINE] + [p.key for p in self.policies]
        if len(set(keys)) != len(keys):
            raise SpecrollError(f"policy names repeat: {keys} (AR is always the baseline)", file=f,
                                field="policies", fix="give each policy a distinct 'label'")
        for p in self.policies:  # unknown policies and parameters fail now, not after an hour of rollouts
            self._make_policy(p)
        rc = self.rollout_config(None)
        try:
            rc.check()
        except SpecrollError as exc:
            raise SpecrollError(exc.what, file=f, field=f"workload.{exc.field}", fix=exc.fix) from None

    def _make_policy(self, p: PolicySpec) -> Any:
        from specroll.policies import load_policy_file, make_policy

        try:
            return load_policy_file(p.file) if p.file else make_policy(p.name, **p.params)
        except SpecrollError as exc:
            raise SpecrollError(exc.what, file=exc.file or self.file, field=exc.field or "policies",
                                fix=exc.fix) from None

    def rollout_config(self, p: PolicySpec | None) -> Any:
        """The real backend's config for policy ``p`` (None = the AR baseline, no drafter)."""
        from specroll.real_backend import RolloutConfig

        known = set(RolloutConfig.model_fields)
        bad = sorted(set(self.workload) - known - {"policy", "params", "drafter"})
        if bad or set(self.workload) & {"policy", "params", "policy_file", "drafter", "drafter_params"}:
            name = (bad or sorted(set(self.workload) & {"policy", "params", "policy_file", "drafter",
                                                         "drafter_params"}))[0]
            raise SpecrollError(f"unknown or misplaced key 'workload.{name}'", file=self.file,
                                field=f"workload.{name}",
                                fix="policies go in [[policies]], the drafter in [drafter]; workload keys "
                                    "are specroll rollout's options")
        w = {"seed": self.seed, **self.workload}
        if p is None:
            w.update(policy=BASELINE, drafter="none")
        else:
            w.update(policy=p.name or BASELINE, params=dict(p.params), policy_file=p.file,
                     drafter=self.drafter, drafter_params=dict(self.drafter_params))
        if self.profile != "calibrate" and "profile" not in w:
            w["profile"] = self.profile  # mdp/pearl price with the validation's own profile
        return parse(RolloutConfig, w, file=self.file, prefix="workload")


# ------------------------------------------------------------------------------------------------
def validate(cfg: ValidateConfig, out: str | Path, *, profile: Any = None) -> dict[str, Any]:
    """Run the validation described in the module doc; write DIR; return summary.json's content.

    ``profile`` (a CostProfile) replaces the config's, e.g. to price a test model's iterations."""
    from specroll.real_backend import load_backend, rollout

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if profile is None:
        profile, profile_ref = _profile(cfg, out)
    else:
        profile_ref = str(profile.save(out / "profile.json"))
    ar_cfg = cfg.rollout_config(None)
    runs: list[tuple[str, PolicySpec | None]] = [(BASELINE, None)] + [(p.key, p) for p in cfg.policies]
    say(f"validate: loading {ar_cfg.model} on {ar_cfg.device}")
    backend = load_backend(ar_cfg)
    real: dict[str, list[dict[str, Any]]] = {k: [] for k, _ in runs}
    traces: dict[str, Any] = {}
    for rep in range(cfg.repeats):
        for key, spec in runs:  # interleaved: drift of the machine hits every policy alike
            rc = cfg.rollout_config(spec)
            bar = progress(total=None, desc=f"real {key} #{rep + 1}/{cfg.repeats}", unit="tok")
            res = rollout(rc, backend=backend, on_tokens=bar.update)
            bar.close()
            d = out / "real" / key / f"rep{rep}"
            res.write(d)
            real[key].append(_real_metrics(res))
            if rep == 0:
                traces[key] = res.trace
    from specroll.real_backend._agreement import agreement_with

    agreement = agreement_with(BASELINE, traces, backend, ar_cfg)  # raises on a CPU in fp32 unless equal
    identical = all(a["identical"] for a in agreement.values())
    say(f"validate: match lengths of drafter '{cfg.drafter}' on the recorded trace")
    from specroll.policies import compute_match_lengths
    from specroll.traces import write_trace

    trace = compute_match_lengths(traces[BASELINE], cfg.drafter, **cfg.drafter_params)
    trace_path = write_trace(trace, out / "trace.parquet")
    kmax = int(trace.meta.extra["drafters"][cfg.drafter]["kmax"])
    sim: dict[str, dict[str, Any]] = {}
    for key, spec in runs:
        policy = cfg._make_policy(spec) if spec is not None else None
        sim[key] = _simulate(cfg, profile, profile_ref, trace, trace_path, kmax, policy,
                             ar_cfg.max_batch, out / "sim" / key)
    summary = _compare(cfg, real, sim, profile, profile_ref)
    summary["outputs_identical"] = identical
    summary["agreement"] = agreement
    summary["wall_s"] = time.perf_counter() - t_start
    rows = _write_comparison(real, sim, out / "comparison.parquet")
    from specroll.analysis._figures_real import validate_parity  # the report's own parity figure

    cols = ("policy", "real_makespan_s", "sim_makespan_s")
    validate_parity({k: np.asarray([r[k] for r in rows]) for k in cols}, out / "parity.png")
    write_json(out / "summary.json", summary)
    return summary


def _profile(cfg: ValidateConfig, out: Path) -> tuple[Any, str]:
    from specroll.calibration import load_profile
    from specroll.real_backend import model_label

    model = model_label(cfg.workload.get("model", "smollm2-135m"))  # hf:<folder> for a checkpoint
    device = cfg.workload.get("device", "cpu")
    if cfg.profile == "calibrate":
        from specroll.calibration import calibrate
        from specroll.policies import make_drafter
        from specroll.real_backend import make_timing_step

        # The grid sized to the workload: its batch, and contexts up to its responses plus a few
        # hundred prompt tokens (the fit extrapolates beyond). Fewer points than the full grid and
        # all of them in the regime the validation prices: ~1.5 min on this CPU at batch 8.
        rc = cfg.rollout_config(None)
        max_ctx = 1 << math.ceil(math.log2(int(rc.max_new_tokens) + 256))
        say(f"validate: calibrating {model} on {device} up to batch {rc.max_batch}, context {max_ctx} "
            "(the simulator's clock for this device, now)")
        cal = calibrate(model, device, step_factory=make_timing_step,
                        drafter=make_drafter(cfg.drafter) if cfg.drafter else None,
                        max_batch=int(rc.max_batch), max_ctx=max_ctx,
                        temperature=float(cfg.workload.get("temperature", 0.7)))
        path = cal.profile.save(out / "profile.json")
        return cal.profile, str(path)
    try:
        prof = load_profile(cfg.profile, expect_model=model)
    except SpecrollError as exc:
        raise SpecrollError(exc.what, file=cfg.file, field="profile", fix=exc.fix) from None
    if prof.kind != "measured":
        raise SpecrollError(f"profile '{cfg.profile}' is a datasheet prediction, not a measurement",
                            file=cfg.file, field="profile",
                            fix='use a profile measured on this device, or profile = "calibrate"')
    if not str(prof.device.name).startswith(device.split(":")[0]):
        say(f"validate: warning: profile measured on '{prof.device.name}', the workload runs on '{device}'")
    timed = prof.extra.get("timed_step", "forward")
    if timed != "engine":
        say("validate: warning: the profile timed the forward alone, not whole engine iterations "
            "(sampling and bookkeeping unpriced): re-measure with `specroll calibrate`")
    if prof.drafter.get("kind") not in (cfg.drafter, None):
        say(f"validate: warning: the profile prices drafter '{prof.drafter.get('kind')}', "
            f"not '{cfg.drafter}'")
    return prof, cfg.profile


def _real_metrics(res: Any) -> dict[str, Any]:
    """Per step: makespan, decode iterations and their time, prefill time, accepted tokens."""
    it = res.iterations
    steps = []
    for st in res.summary["steps"]:
        s = st["step"]
        dec = [r for r in it if r["step"] == s and r["phase"] == "decode"]
        pre = [r for r in it if r["step"] == s and r["phase"] == "prefill"]
        steps.append({"step": s, "makespan_s": float(st["makespan_s"]), "iterations": len(dec),
                      "decode_s": float(sum(r["wall_s"] for r in dec)),
                      "prefill_s": float(sum(r["wall_s"] for r in pre)),
                      "accepted": int(sum(r["accepted"] for r in dec)), "tokens": int(st["tokens"])})
    return {"steps": steps}


def _simulate(cfg: ValidateConfig, profile: Any, profile_ref: str, trace: Any, trace_path: Path, kmax: int,
              policy: Any, max_batch: int, out: Path) -> dict[str, Any]:
    from specroll.simulator import SimConfig, Simulator

    rc = cfg.rollout_config(None)
    n_rollouts = int(len(trace)) // max(1, int(rc.steps))
    slots = min(int(max_batch), n_rollouts)
    d = {
        "seed": cfg.seed,
        # One engine of the real batch size; its KV never binds (the real cache has a slot per request).
        "cluster": {"engines": 1, "tp": 1, "max_batch": slots, "dispatch": "round-robin",
                    "kv_capacity_tokens": slots * (int(trace.column("prompt_len").max())
                                                   + int(rc.max_new_tokens) + kmax + 1)},
        "model": {"name": profile.model, "profile": profile_ref},
        "workload": {"trace": str(trace_path.resolve()), "history_window": int(rc.length_window)},
        "policy": {"name": BASELINE, "params": {}},
        "acceptance": {"source": "trace", "drafter": cfg.drafter, "kmax": kmax},
        "train": {"enabled": False},
    }
    sc = SimConfig.from_dict(copy.deepcopy(d), file=cfg.file)
    result = Simulator(sc, profile=profile, trace=trace).run(policy, show_progress=False)
    result.write(out)
    steps = []
    for st in result.summary["steps"]:
        steps.append({"step": st["step"], "makespan_s": float(st["rollout_s"]),
                      "iterations": int(st["iterations"]),
                      "decode_s": float(st["engine_busy_s"] - st["prefill_s"]),
                      "prefill_s": float(st["prefill_s"]),
                      "accepted": int(st["accepted_tokens"]), "tokens": int(st["tokens"])})
    return {"steps": steps, "summary": result.summary}


# ------------------------------------------------------------------------------------------------
def _totals(steps: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("makespan_s", "iterations", "decode_s", "prefill_s", "accepted", "tokens")
    return {k: float(sum(s[k] for s in steps)) for k in keys}


def error_terms(real: dict[str, float], sim: dict[str, float]) -> dict[str, float]:
    """The exact split of T_s / T_r - 1 into iteration count, iteration time and admission (module doc)."""
    T_r, T_s = real["makespan_s"], sim["makespan_s"]
    I_r, I_s = real["iterations"], sim["iterations"]
    t_r = real["decode_s"] / I_r if I_r else 0.0
    t_s = sim["decode_s"] / I_s if I_s else 0.0
    other_r = T_r - real["prefill_s"] - real["decode_s"]
    return {"iteration_count": (I_s - I_r) * t_r / T_r,
            "iteration_time": I_s * (t_s - t_r) / T_r,
            "admission": (sim["prefill_s"] - real["prefill_s"] - other_r + (T_s - sim["prefill_s"]
                                                                              - sim["decode_s"])) / T_r}


def _compare(cfg: ValidateConfig, real: dict[str, list[dict[str, Any]]], sim: dict[str, dict[str, Any]],
             profile: Any, profile_ref: str) -> dict[str, Any]:
    policies: dict[str, Any] = {}
    real_tot = {k: [_totals(r["steps"]) for r in reps] for k, reps in real.items()}
    sim_tot = {k: _totals(v["steps"]) for k, v in sim.items()}
    for key in real:
        reps, s = real_tot[key], sim_tot[key]
        mean_r = {k: float(np.mean([r[k] for r in reps])) for k in reps[0]}
        errs = [s["makespan_s"] / r["makespan_s"] - 1.0 for r in reps]
        sp_m = sp_p = None
        if key != BASELINE:
            ar_r = float(np.mean([r["makespan_s"] for r in real_tot[BASELINE]]))
            sp_m = ar_r / mean_r["makespan_s"]
            sp_p = sim_tot[BASELINE]["makespan_s"] / s["makespan_s"]
        policies[key] = {
            "policy": sim[key]["summary"]["policy"],
            "makespan_real_s": mean_r["makespan_s"],
            "makespan_real_s_repeats": [r["makespan_s"] for r in reps],
            "makespan_sim_s": s["makespan_s"],
            "makespan_error": s["makespan_s"] / mean_r["makespan_s"] - 1.0,
            "makespan_error_spread": [min(errs), max(errs)],
            "speedup_measured": sp_m,
            "speedup_predicted": sp_p,
            "iterations_real": int(round(mean_r["iterations"])),
            "iterations_sim": int(s["iterations"]),
            "accepted_per_iter_real": mean_r["accepted"] / max(mean_r["iterations"], 1.0),
            "accepted_per_iter_sim": s["accepted"] / max(s["iterations"], 1.0),
            "mean_iter_s_real": mean_r["decode_s"] / max(mean_r["iterations"], 1.0),
            "mean_iter_s_sim": s["decode_s"] / max(s["iterations"], 1.0),
            "prefill_s_real": mean_r["prefill_s"],
            "prefill_s_sim": s["prefill_s"],
            "error_terms": error_terms(mean_r, s),
        }
    worst = max(policies, key=lambda k: abs(policies[k]["makespan_error"]))
    rc = cfg.rollout_config(None)
    return {
        "kind": "validate",
        "config": {"file": cfg.file, "repeats": cfg.repeats, "seed": cfg.seed, "workload": cfg.workload,
                   "drafter": {"name": cfg.drafter, "params": cfg.drafter_params},
                   "policies": [dataclasses.asdict(p) for p in cfg.policies]},
        "device": rc.device,
        "model": rc.model,
        "profile": {"ref": profile_ref, "device": profile.device.name, "heldout_mape": profile.heldout_mape,
                    "timed_step": profile.extra.get("timed_step", "forward")},
        "repeats": cfg.repeats,
        "policies": policies,
        # overall: the per-policy error of largest magnitude (a sum over policies could cancel).
        "makespan_error": {**{k: v["makespan_error"] for k, v in policies.items()},
                           "overall": policies[worst]["makespan_error"]},
        "speedup_measured": {k: v["speedup_measured"] for k, v in policies.items() if k != BASELINE},
        "speedup_predicted": {k: v["speedup_predicted"] for k, v in policies.items() if k != BASELINE},
    }


def _write_comparison(real: dict[str, list[dict[str, Any]]], sim: dict[str, dict[str, Any]],
                      path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for key, reps in real.items():
        sim_steps = {s["step"]: s for s in sim[key]["steps"]}
        for rep, r in enumerate(reps):
            for st in r["steps"]:
                ss = sim_steps[st["step"]]
                rows.append({
                    "policy": key, "repeat": rep, "step": st["step"],
                    "real_makespan_s": st["makespan_s"], "sim_makespan_s": ss["makespan_s"],
                    "real_iterations": st["iterations"], "sim_iterations": ss["iterations"],
                    "real_accepted_per_iter": st["accepted"] / max(st["iterations"], 1),
                    "sim_accepted_per_iter": ss["accepted"] / max(ss["iterations"], 1),
                    "real_mean_iter_s": st["decode_s"] / max(st["iterations"], 1),
                    "sim_mean_iter_s": ss["decode_s"] / max(ss["iterations"], 1),
                    "real_prefill_s": st["prefill_s"], "sim_prefill_s": ss["prefill_s"],
                })
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    return rows


def format_summary(s: dict[str, Any]) -> str:
    """The one-screen summary printed by `specroll validate`."""
    from specroll.real_backend._agreement import format_agreement

    mape = s["profile"]["heldout_mape"]
    lines = [f"validate: {s['model']} on {s['device']}, {s['repeats']} repeat(s), "
             f"profile {s['profile']['ref']} (held-out MAPE {100 * (mape or float('nan')):.1f} %)",
             f"outputs identical to AR for every policy: {s.get('outputs_identical')}",
             *[f"  {k}: {format_agreement(a)}" for k, a in (s.get("agreement") or {}).items()
               if not a["identical"]], "",
             f"{'policy':<14} {'real s':>8} {'sim s':>8} {'error':>7} {'spread':>15} {'speedup real':>12} "
             f"{'sim':>6} {'iters r/s':>11} {'acc/it r/s':>11} {'it ms r/s':>13}"]
    for key, p in s["policies"].items():
        lo, hi = p["makespan_error_spread"]
        spr = f"[{100 * lo:+.1f},{100 * hi:+.1f}]%"
        sm = "-" if p["speedup_measured"] is None else f"{p['speedup_measured']:.3f}x"
        spp = "-" if p["speedup_predicted"] is None else f"{p['speedup_predicted']:.3f}x"
        lines.append(f"{key:<14} {p['makespan_real_s']:>8.2f} {p['makespan_sim_s']:>8.2f} "
                     f"{100 * p['makespan_error']:>+6.1f}% {spr:>15} {sm:>12} {spp:>6} "
                     f"{p['iterations_real']:>5}/{p['iterations_sim']:<5} "
                     f"{p['accepted_per_iter_real']:>5.2f}/{p['accepted_per_iter_sim']:<5.2f} "
                     f"{1e3 * p['mean_iter_s_real']:>6.1f}/{1e3 * p['mean_iter_s_sim']:<6.1f}")
    lines.append("")
    lines.append("error terms (fraction of the real makespan; they sum to the error):")
    for key, p in s["policies"].items():
        e = p["error_terms"]
        lines.append(f"  {key:<12} iteration count {100 * e['iteration_count']:+6.2f} %   "
                     f"iteration time {100 * e['iteration_time']:+6.2f} %   "
                     f"admission {100 * e['admission']:+6.2f} %")
    lines.append(f"overall makespan error (largest magnitude): {100 * s['makespan_error']['overall']:+.1f} %")
    return "\n".join(lines)
