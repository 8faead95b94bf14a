"""Report sections for simulator outputs: one simulation, a capacity plan, several simulations compared.

A builder takes a :class:`~analysis._kinds.Run` and the :class:`Ctx` (where PNGs go) and returns a
:class:`Section`. Missing optional files become a note in the section, not an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specroll.analysis import _figures as F
from specroll.analysis._html import figures, fmt, image, kv_table, note, pct, table
from specroll.analysis._kinds import Run
from specroll.core.errors import SpecrollError


@dataclass
class Section:
    title: str
    subtitle: str
    body: str
    headline: str = ""
    """one short line for the overview table."""


@dataclass
class Ctx:
    out: Path
    pngs: list[Path] = field(default_factory=list)
    _slugs: set[str] = field(default_factory=set)

    def slug(self, run: Run) -> str:
        """A file-name-safe, unique prefix for the run's PNGs."""
        name = run.name.removesuffix(".parquet")
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or run.kind
        s, i = base, 2
        while s in self._slugs:
            s, i = f"{base}_{i}", i + 1
        self._slugs.add(s)
        return s

    def png(self, prefix: str, name: str) -> Path:
        path = self.out / f"{prefix}_{name}.png"
        self.pngs.append(path)
        return path


def read_columns(path: Path, columns: list[str] | None = None, *, required: tuple[str, ...] = ()
                 ) -> dict[str, np.ndarray]:
    """A Parquet file's columns as numpy arrays; a missing required column is a SpecrollError."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a non-Parquet file
        raise SpecrollError(f"not a readable Parquet file ({exc})", file=path) from None
    missing = [c for c in required if c not in names]
    if missing:
        raise SpecrollError(f"missing column(s) {missing}", file=path, field=missing[0],
                            fix="regenerate the file with the current specroll")
    wanted = [c for c in (columns or names) if c in names]
    t = pq.read_table(path, columns=wanted)
    return {n: t.column(n).to_numpy() for n in t.column_names}


def policy_label(spec: Any, max_len: int | None = None) -> str:
    """'fixed k=3' from {"policy": "fixed", "params": {"k": 3}}; past ``max_len`` characters only
    the family name and '…' (summaries list every parameter, defaults included)."""
    if not isinstance(spec, dict):
        return str(spec) if spec is not None else "?"
    params = spec.get("params") or {}
    def show(v: Any) -> str:  # floats rounded inside lists too (0.30000000000000004 -> 0.3)
        if isinstance(v, float):
            return fmt(v, 3)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(show(x) for x in v) + "]"
        return str(v)

    text = " ".join(f"{k}={show(v)}" for k, v in params.items())
    label = f"{spec.get('policy', '?')} {text}".strip()
    return label if max_len is None or len(label) <= max_len else f"{spec.get('policy', '?')} …"


def _missing(run: Run, files: list[str], what: str) -> str:
    return note(f"{', '.join(files)} missing in {run.path}: no {what}.")


# --- simulate --------------------------------------------------------------------------------------

def simulate_section(run: Run, ctx: Ctx) -> Section:
    s = run.summary
    prefix = ctx.slug(run)
    parts: list[str] = [note(p) for p in run.problems]
    figs: list[str] = []
    headline = ""
    if s is None:
        parts.append(_missing(run, ["summary.json"], "headline figures or per-step breakdown"))
        subtitle = "simulation"
    else:
        steps = s.get("steps") or []
        headline = f"makespan {fmt(s.get('makespan_s'))} s, {policy_label(s.get('policy'), 40)}"
        subtitle = (f"{policy_label(s.get('policy'))} · {s.get('model', '?')} on {s.get('profile', '?')} · "
                    f"{s.get('engines', '?')} engines x tp{s.get('tp', 1)}")
        acc = s.get("acceptance") or {}
        parts.append(kv_table([
            ("makespan (s)", s.get("makespan_s")),
            ("rollout / train / sync (s)",
             " / ".join(fmt(s.get(k)) for k in ("rollout_s", "train_s", "sync_s"))),
            ("RL steps", len(steps)),
            ("rollouts / tokens", f"{fmt(s.get('rollouts'))} / {fmt(s.get('tokens'))}"),
            ("GPU busy in rollout", pct(s.get("gpu_busy_fraction"), signed=False)),
            ("accepted tokens per engine iteration", s.get("mean_accepted_per_iteration")),
            ("tokens per request-iteration", s.get("tokens_per_request_iteration")),
            ("drafted / accepted / wasted tokens",
             " / ".join(fmt(s.get(k)) for k in ("drafted_tokens", "accepted_tokens", "wasted_draft_tokens"))),
            ("preemptions", s.get("preemptions")),
            ("acceptance", ", ".join(f"{k}={v}" for k, v in acc.items()) if isinstance(acc, dict) else acc),
            ("cluster", f"{s.get('engines', '?')} engines x tp{s.get('tp', 1)}, max batch "
                        f"{s.get('max_batch', '?')}, {s.get('dispatch', '?')} dispatch"),
            ("seed", s.get("seed")),
            ("simulation wall time (s)", s.get("wall_s")),
        ], cols=2))
        if steps:
            parts.append("<h3>Per step</h3>" + table(
                ["step", "rollouts", "rollout (s)", "train (s)", "sync (s)", "step (s)", "tokens",
                 "tokens / request-iter", "GPU busy", "preemptions"],
                [[st.get("step"), st.get("rollouts"), st.get("rollout_s"), st.get("train_s"),
                  st.get("sync_s"), st.get("step_s"), st.get("tokens"),
                  st.get("tokens_per_request_iteration"),
                  pct(st.get("gpu_busy_fraction"), signed=False), st.get("preemptions")] for st in steps]))
            png = F.sim_breakdown(steps, int(s.get("engines", 0) or 0), ctx.png(prefix, "breakdown"))
            figs.append(image(png, "Per-step makespan breakdown. The rollout phase is split by the "
                                   "engines' mean busy fraction: the light part is engine time spent idle, "
                                   "waiting for the step's longest rollout (the synchronous barrier)."))
    req_path, eng_path = run.path / "requests.parquet", run.path / "engines.parquet"
    req = read_columns(req_path, ["step", "response_len", "start_s"], required=("step", "response_len")) \
        if req_path.exists() else None
    if eng_path.exists():
        eng = read_columns(eng_path, ["step", "engine", "time_s", "batch_size", "iter_time_s"],
                           required=("step", "engine", "time_s", "batch_size", "iter_time_s"))
        if len(eng["step"]):
            t0 = {}
            if req is not None and "start_s" in req:
                for st in np.unique(req["step"]).tolist():
                    t0[st] = float(req["start_s"][req["step"] == st].min())
            rollout_s = {int(st["step"]): float(st["rollout_s"]) for st in (s or {}).get("steps", [])
                         if "step" in st and "rollout_s" in st}
            png = F.sim_batch(eng, t0, rollout_s, ctx.png(prefix, "batch"))
            figs.insert(0, image(png, "Active batch size per engine over each RL step (symlog y): the "
                                      "batch drains as short rollouts finish, leaving a long tail of a few "
                                      "long ones.", wide=True))
    else:
        parts.append(_missing(run, ["engines.parquet"], "batch-size timeline"))
    if req is not None:
        png = F.length_hist(req["response_len"], ctx.png(prefix, "lengths"), title="response lengths")
        figs.append(image(png, "Response-length distribution of the simulated rollouts (log-log)."))
    else:
        parts.append(_missing(run, ["requests.parquet"], "response-length distribution"))
    parts.append(figures(figs))
    return Section(run.name, subtitle, "".join(parts), headline)


def short_names(names: list[str]) -> list[str]:
    """Run names without the folder prefix they all share ('sim/das', 'sim/ar' -> 'das', 'ar')."""
    parts = [n.split("/") for n in names]
    k = 0
    while all(len(p) > k + 1 for p in parts) and len({p[k] for p in parts}) == 1:
        k += 1
    return ["/".join(p[k:]) for p in parts]


def _bar_label(name: str, spec: Any) -> str:
    """'run: policy' (short), or just the run when its name already says the policy."""
    policy = policy_label(spec, 28)
    family = spec.get("policy", "") if isinstance(spec, dict) else ""
    norm = name.replace("_", "").replace("-", "").replace("=", "")
    if norm == policy.replace(" ", "").replace("=", "") or name == family:
        return name
    return f"{name}: {policy}"


def _workload_key(s: dict[str, Any]) -> tuple:
    return (s.get("model"), s.get("engines"), s.get("tp"), s.get("rollouts"), s.get("tokens"))


def comparable_groups(runs: list[Run], key: Any) -> list[list[Run]]:
    """Runs grouped by ``key(run)`` (first-seen order), only groups of two or more: comparing
    policies makes sense only on one workload and cluster."""
    groups: dict[Any, list[Run]] = {}
    for r in runs:
        groups.setdefault(key(r), []).append(r)
    return [g for g in groups.values() if len(g) >= 2]


def group_title(base: str, i: int, n: int) -> str:
    return base if n == 1 else f"{base} {i + 1}/{n}"


def compare_simulations(runs: list[Run], ctx: Ctx) -> list[Section]:
    """Simulations of the same workload and cluster side by side (one section per such group), with
    the speedup over the group's ``ar`` run."""
    runs = [r for r in runs if r.kind == "simulate" and r.summary is not None and "makespan_s" in r.summary]
    groups = comparable_groups(runs, lambda r: _workload_key(r.summary))
    return [_compare_group(g, ctx, i, len(groups)) for i, g in enumerate(groups)]


def _compare_group(runs: list[Run], ctx: Ctx, i: int, n: int) -> Section:
    base = next((r for r in runs if (r.summary.get("policy") or {}).get("policy") == "ar"), None)
    runs = sorted(runs, key=lambda r: r.summary["makespan_s"])  # fastest first
    rows, labels, rollout, other, speedup = [], [], [], [], []
    for r, short in zip(runs, short_names([r.name for r in runs])):
        s = r.summary
        sp = (base.summary["makespan_s"] / s["makespan_s"]
              if base is not None and s["makespan_s"] > 0 else None)
        rest = float(s.get("train_s", 0.0) or 0.0) + float(s.get("sync_s", 0.0) or 0.0)
        labels.append(_bar_label(short, s.get("policy")))
        rollout.append(float(s.get("rollout_s", s["makespan_s"])))
        other.append(rest)
        speedup.append(sp)
        rows.append([r.name, policy_label(s.get("policy")), s["makespan_s"], s.get("rollout_s"), rest,
                     "–" if sp is None else f"{sp:.3f}x", s.get("mean_accepted_per_iteration"),
                     pct(s.get("gpu_busy_fraction"), signed=False), s.get("tokens")])
    parts = []
    if base is None:
        parts.append(note("No run of this workload uses the 'ar' policy, so there is no speedup to show; "
                          "simulate one with `specroll simulate CONFIG --policy ar --out DIR`."))
    parts.append(table(["run", "policy", "makespan (s)", "rollout (s)", "train + sync (s)", "speedup over ar",
                        "accepted / iter", "GPU busy", "tokens"], rows, text_cols=(1,)))
    name = "simulations" if i == 0 else f"simulations_{i + 1}"
    png = F.compare_bars(labels, rollout, other, speedup, ctx.png("compare", name),
                         baseline="ar" if base else None)
    parts.append(figures([image(png, "Makespan of each simulated run; the bracket is the speedup over the "
                                     "'ar' run.")]))
    s = runs[0].summary
    subtitle = (f"{len(runs)} simulated runs of one workload: {s.get('model', '?')}, {s.get('engines', '?')} "
                f"engines x tp{s.get('tp', 1)}, {fmt(s.get('rollouts'))} rollouts, {fmt(s.get('tokens'))} "
                "tokens")
    return Section(group_title("Policy comparison (simulations)", i, n), subtitle, "".join(parts))


# --- plan ------------------------------------------------------------------------------------------

def plan_section(run: Run, ctx: Ctx) -> Section:
    from specroll.core.fileio import read_json

    plan = read_json(run.path / "plan.json")
    if not isinstance(plan, dict) or "rows" not in plan:
        raise SpecrollError("not a plan (no 'rows')", file=run.path / "plan.json", field="rows",
                            fix="pass the --out folder of `specroll plan`")
    tp = int(plan.get("tp", 1) or 1)
    rows = []
    for r in plan["rows"]:
        e = r.get("engines")
        rows.append([r.get("label", "?"), policy_label(r.get("policy")), "not met" if e is None else e,
                     "–" if e is None else e * tp, r.get("step_s"), len(r.get("tried") or {})])
    met = [r for r in plan["rows"] if r.get("engines") is not None]
    headline = "; ".join(f"{r.get('label')}: {r['engines']} engines" for r in met) or "target not met"
    body = kv_table([("target mean step time (s)", plan.get("step_time_s")), ("model", plan.get("model")),
                     ("profile", plan.get("profile")), ("GPUs per engine (tp)", tp)], cols=2)
    body += table(["", "policy", "fewest engines", "GPUs", "step time (s)", "candidates simulated"], rows,
                  text_cols=(1,))
    if not met:
        body += note("No policy met the target within the engine limit: the longest rollout alone takes "
                     "longer than the target (see the flat right end of the curve).")
    png = F.plan_curve(plan, ctx.png(ctx.slug(run), "plan"))
    body += figures([image(png, "Mean RL step time of every engine count the planner simulated.")])
    return Section(run.name, f"capacity plan for a {fmt(plan.get('step_time_s'))} s step", body, headline)
