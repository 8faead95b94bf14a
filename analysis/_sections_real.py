"""Report sections for real-backend rollouts, sim-vs-real validation, tuning studies and traces."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from specroll.analysis import _figures as F
from specroll.analysis import _figures_real as R
from specroll.analysis._html import esc, figures, fmt, image, kv_table, note, pct, table
from specroll.analysis._kinds import Run
from specroll.analysis._sections import (
    Ctx,
    Section,
    _bar_label,
    _missing,
    comparable_groups,
    group_title,
    policy_label,
    read_columns,
    short_names,
)

BAND = 0.10  # the +-10 % band of the parity plot and of the error colouring


# --- rollout (real backend) -------------------------------------------------------------------------

def _trace_pngs(trace_path: Path, ctx: Ctx, prefix: str) -> tuple[Any, list[Path]]:
    """traces.plot_trace's two PNGs for the trace at ``trace_path``, renamed into the report folder."""
    from specroll.traces import plot_trace, read_trace

    trace = read_trace(trace_path, columns=[])
    ctx.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ctx.out, prefix=".trace-") as tmp:
        written = plot_trace(trace, tmp)
        paths = []
        for src in written:
            dst = ctx.png(prefix, Path(src).stem)
            os.replace(src, dst)
            paths.append(dst)
    return trace, paths


def rollout_section(run: Run, ctx: Ctx) -> Section:
    s = run.summary
    prefix = ctx.slug(run)
    parts: list[str] = [note(p) for p in run.problems]
    figs: list[str] = []
    headline, subtitle = "", "real-backend rollout"
    if s is None:
        parts.append(_missing(run, ["summary.json"], "headline figures or per-step table"))
    else:
        cfg = s.get("config") or {}
        pol = policy_label(cfg.get("policy_spec")
                           or {"policy": cfg.get("policy"), "params": cfg.get("params")})
        subtitle = (f"{pol} · drafter {cfg.get('drafter', '?')} · {cfg.get('model', '?')} on "
                    f"{cfg.get('device', '?')} ({cfg.get('dtype', '?')})")
        headline = (f"{fmt(s.get('total_wall_s'))} s wall, {fmt(s.get('tokens_per_s'), 1)} tokens/s, "
                    f"{policy_label(cfg.get('policy_spec'), 40) if cfg.get('policy_spec') else pol}")
        parts.append(kv_table([
            ("total wall time (s)", s.get("total_wall_s")),
            ("tokens", s.get("tokens")),
            ("tokens per second", s.get("tokens_per_s")),
            ("decode iterations", s.get("iterations")),
            ("accepted tokens per iteration", s.get("accepted_per_iteration")),
            ("accepted tokens", s.get("accepted")),
            ("workload", f"{cfg.get('prompts', '?')} prompts x {cfg.get('samples', '?')} samples x "
                         f"{cfg.get('steps', '?')} steps, max {cfg.get('max_new_tokens', '?')} new tokens"),
            ("sampling", f"temperature {cfg.get('temperature', '?')}, top-p {cfg.get('top_p', '?')}, "
                         f"seed {cfg.get('seed', '?')}"),
            ("max batch / kmax", f"{cfg.get('max_batch', '?')} / {cfg.get('kmax', '?')}"),
        ], cols=2))
        steps = s.get("steps") or []
        if steps:
            parts.append("<h3>Per step</h3>" + table(
                ["step", "makespan (s)", "rollouts", "tokens", "decode iters", "accepted / iter",
                 "tokens / iter", "tokens / s", "mean length", "max length", "ended on EOS", "accuracy"],
                [[st.get("step"), st.get("makespan_s"), st.get("rollouts"), st.get("tokens"),
                  st.get("iterations"),
                  st.get("accepted_per_iteration"), st.get("tokens_per_iteration"), st.get("tokens_per_s"),
                  st.get("mean_response_len"), st.get("max_response_len"),
                  pct(st.get("finished_fraction"), 0, signed=False),
                  pct(st.get("accuracy"), 0, signed=False)] for st in steps]))
    it_path = run.path / "iterations.parquet"
    if it_path.exists():
        it = read_columns(it_path, ["step", "phase", "batch_size", "q_sum", "drafted", "accepted", "wall_s"],
                          required=("step", "phase", "batch_size", "q_sum", "accepted", "wall_s"))
        if len(it["step"]):
            figs.append(image(R.rollout_batch(it, ctx.png(prefix, "batch")),
                              "Requests in the decode batch over each step's wall time: the long tail on "
                              "real hardware."))
            if int(it["accepted"].sum()) > 0 or int(it.get("drafted", np.zeros(1)).sum()) > 0:
                figs.append(image(R.rollout_accepted(it, ctx.png(prefix, "accepted")),
                                  "Accepted draft tokens per decode iteration, for the whole batch and per "
                                  "request."))
            else:
                parts.append(note("No draft token was proposed or accepted in this run (policy 'ar' or "
                                  "drafter 'none'), so there is no acceptance plot."))
            figs.append(image(R.rollout_iter_time(it, ctx.png(prefix, "iter_time")),
                              "Wall time of every forward against batch size; colour = query tokens per "
                              "request (verification of drafts)."))
    else:
        parts.append(_missing(run, ["iterations.parquet"], "batch-size, acceptance or iteration-time plots"))
    tr_path = run.path / "trace.parquet"
    if tr_path.exists():
        trace, pngs = _trace_pngs(tr_path, ctx, prefix)
        figs.append(image(pngs[0], "Response-length distribution of the generated rollouts (log-log)."))
        if len(trace.steps) > 1 and len(pngs) > 1:
            figs.append(image(pngs[1], "Per-prompt lengths across RL steps (geometric mean of each group)."))
    else:
        parts.append(_missing(run, ["trace.parquet"], "length distribution"))
    parts.append(figures(figs))
    return Section(run.name, subtitle, "".join(parts), headline)


def _rollout_key(cfg: dict[str, Any]) -> tuple:
    return tuple(cfg.get(k) for k in ("model", "device", "prompts", "prompts_file", "samples", "steps",
                                      "seed", "max_new_tokens", "temperature", "top_p"))


def compare_rollouts(runs: list[Run], ctx: Ctx) -> list[Section]:
    """Real rollouts of the same workload side by side (one section per such group: same model,
    device, prompts, samples, steps and seed, so the tokens are identical), with the measured speedup
    over the group's 'ar' rollout."""
    runs = [r for r in runs if r.kind == "rollout" and r.summary and r.summary.get("total_wall_s")]
    groups = comparable_groups(runs, lambda r: _rollout_key(r.summary.get("config") or {}))
    return [_compare_group(g, ctx, i, len(groups)) for i, g in enumerate(groups)]


def _is_ar(cfg: dict[str, Any]) -> bool:
    return (cfg.get("policy_spec") or {}).get("policy", cfg.get("policy")) == "ar"


def _compare_group(runs: list[Run], ctx: Ctx, i: int, n: int) -> Section:
    base = next((r for r in runs if _is_ar(r.summary.get("config") or {})), None)
    runs = sorted(runs, key=lambda r: r.summary["total_wall_s"])  # fastest first
    rows, labels, walls, speedups = [], [], [], []
    for r, short in zip(runs, short_names([r.name for r in runs])):
        s, cfg = r.summary, r.summary.get("config") or {}
        sp = base.summary["total_wall_s"] / s["total_wall_s"] if base is not None else None
        spec = cfg.get("policy_spec") or {"policy": cfg.get("policy")}
        labels.append(_bar_label(short, spec))
        walls.append(float(s["total_wall_s"]))
        speedups.append(sp)
        rows.append([r.name, policy_label(spec), cfg.get("drafter"), s.get("tokens"), s["total_wall_s"],
                     s.get("tokens_per_s"), s.get("accepted_per_iteration"),
                     "–" if sp is None else f"{sp:.3f}x"])
    body = "" if base is not None else note("No rollout of this workload uses the 'ar' policy: no speedup.")
    body += table(["run", "policy", "drafter", "tokens", "wall (s)", "tokens / s", "accepted / iter",
                   f"speedup over {base.name if base is not None else 'ar'}"], rows, text_cols=(1, 2))
    name = "rollouts" if i == 0 else f"rollouts_{i + 1}"
    png = F.compare_bars(labels, walls, [0.0] * len(walls), speedups, ctx.png("compare", name),
                         baseline=base.name if base is not None else None, what="wall time")
    body += figures([image(png, "Measured wall time of each real rollout; the bracket is the speedup over "
                                "the 'ar' rollout (wall-clock: machine load matters).")])
    cfg = runs[0].summary.get("config") or {}
    subtitle = (f"{len(runs)} rollouts of one workload: {cfg.get('model', '?')} on {cfg.get('device', '?')}, "
                f"{cfg.get('prompts', '?')} prompts x {cfg.get('samples', '?')} samples x "
                f"{cfg.get('steps', '?')} steps, seed {cfg.get('seed', '?')}")
    return Section(group_title("Policy comparison (real rollouts)", i, n), subtitle, body)


# --- validate ---------------------------------------------------------------------------------------

def _err_cell(v: Any) -> str:
    if not isinstance(v, int | float) or not math.isfinite(v):
        return "–"
    cls = "good" if abs(v) <= BAND else "bad"
    return f'<span class="{cls}">{esc(pct(v))}</span>'


def validate_section(run: Run, ctx: Ctx) -> Section:
    s = run.summary
    prefix = ctx.slug(run)
    parts: list[str] = [note(p) for p in run.problems]
    figs: list[str] = []
    headline = ""
    if s is None:
        parts.append(_missing(run, ["summary.json"], "error table or speedups"))
    else:
        pols: dict[str, dict[str, Any]] = s.get("policies") or {}
        overall = (s.get("makespan_error") or {}).get("overall")
        headline = f"makespan error {pct(overall)} (largest of {len(pols)} policies)"
        prof = s.get("profile") if isinstance(s.get("profile"), dict) else {}
        pairs = [("makespan error, largest magnitude", pct(overall)),
                 ("policies", ", ".join(pols) or "–"),
                 ("repeats of each real run", s.get("repeats"))]
        if s.get("model") or s.get("device"):
            pairs.append(("model on device", f"{s.get('model', '?')} on {s.get('device', '?')}"))
        if prof:
            pairs.append(("cost profile", f"{prof.get('ref', '?')} (held-out MAPE "
                                          f"{pct(prof.get('heldout_mape'), signed=False)}, timed step "
                                          f"{prof.get('timed_step', '?')})"))
        if "outputs_identical" in s:
            pairs.append(("speculative outputs identical to AR", s["outputs_identical"]))
        if s.get("wall_s") is not None:
            pairs.append(("validation wall time (s)", s["wall_s"]))
        parts.append(kv_table(pairs, cols=2))
        rows = []
        for name, p in pols.items():
            spread = p.get("makespan_error_spread") or [None, None]
            terms = p.get("error_terms") or {}
            rows.append([
                esc(name), esc(fmt(p.get("makespan_real_s"))), esc(fmt(p.get("makespan_sim_s"))),
                _err_cell(p.get("makespan_error")),
                f"{_err_cell(spread[0])} … {_err_cell(spread[1])}" if len(spread) == 2 else "–",
                esc(f"{fmt(p.get('iterations_real'))} / {fmt(p.get('iterations_sim'))}"),
                esc(f"{fmt(p.get('accepted_per_iter_real'))} / {fmt(p.get('accepted_per_iter_sim'))}"),
                esc(f"{_ms(p.get('mean_iter_s_real'))} / {_ms(p.get('mean_iter_s_sim'))}"),
                esc(f"{fmt(p.get('prefill_s_real'))} / {fmt(p.get('prefill_s_sim'))}"),
                *(esc(pct(terms.get(k))) for k in ("iteration_time", "iteration_count", "admission")),
            ])
        parts.append("<h3>Makespan error per policy</h3>" + table(
            ["policy", "real (s)", "simulated (s)", "error", "spread over repeats", "iterations real / sim",
             "accepted / iter real / sim", "mean iteration (ms) real / sim", "prefill (s) real / sim",
             "error: iteration time",
             "error: iteration count", "error: admission"], rows, raw=True))
        parts.append(f'<p class="sub">Error = simulated / real - 1 (real: mean over repeats); green within '
                     f"±{100 * BAND:.0f} %. The last three columns split the error exactly into its terms, "
                     "as fractions of the real makespan (they sum to the error).</p>")
        names, meas, pred = _speedups(s)
        if names:
            parts.append("<h3>Speedup over autoregressive</h3>" + table(
                ["policy", "measured", "predicted", "predicted / measured - 1"],
                [[n, m, p, pct(p / m - 1) if m and p else "–"] for n, m, p in zip(names, meas, pred)]))
            figs.append(image(R.validate_speedup(names, meas, pred, ctx.png(prefix, "speedup")),
                              "Measured (real backend) and predicted (simulator) speedup of each policy over "
                              "autoregressive decoding."))
        else:
            parts.append(note("summary.json has no measured or predicted speedups (no 'ar' baseline)."))
    tr_path = run.path / "trace.parquet"
    if tr_path.exists():  # the recorded AR trace the simulator replayed
        _, pngs = _trace_pngs(tr_path, ctx, prefix)
        figs.append(image(pngs[0], "Response lengths of the recorded workload the simulator replayed."))
    cmp_path = run.path / "comparison.parquet"
    if cmp_path.exists():
        cmp = read_columns(cmp_path, required=("policy", "real_makespan_s", "sim_makespan_s"))
        if len(cmp["policy"]):
            figs.insert(0, image(R.validate_parity(cmp, ctx.png(prefix, "parity"), band=BAND),
                                 "Parity plot: each point is one RL step of one repeat of one policy; on "
                                 "the line the simulator is exact, in the grey band within "
                                 f"±{100 * BAND:.0f} %."))
    else:
        parts.append(_missing(run, ["comparison.parquet"], "per-step parity plot"))
    parts.append(figures(figs))
    return Section(run.name, "simulator vs real backend", "".join(parts), headline)


def _ms(v: Any) -> str:
    return fmt(1e3 * v, 2) if isinstance(v, int | float) and math.isfinite(v) else "–"


def _speedups(s: dict[str, Any]) -> tuple[list[str], list[float | None], list[float | None]]:
    meas, pred = dict(s.get("speedup_measured") or {}), dict(s.get("speedup_predicted") or {})
    for name, p in (s.get("policies") or {}).items():
        meas.setdefault(name, p.get("speedup_measured"))
        pred.setdefault(name, p.get("speedup_predicted"))
    names = [n for n in dict.fromkeys([*meas, *pred]) if meas.get(n) is not None or pred.get(n) is not None]
    return names, [meas.get(n) for n in names], [pred.get(n) for n in names]
