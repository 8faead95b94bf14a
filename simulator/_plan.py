"""Capacity planning: the fewest engines whose simulated RL step meets a step-time target.

Step time falls with more engines (fewer rollouts each) until the longest rollout alone sets it,
so the search brackets by doubling and then bisects; each candidate engine count is a full
simulation (same trace and acceptance draws), once without speculation (``ar``) and once with the
config's policy.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from specroll.core.errors import SpecrollError
from specroll.core.progress import say
from specroll.core.results import Summary, register_summary
from specroll.simulator._config import SimConfig
from specroll.simulator._simulate import Simulator


@dataclass
class PlanRow:
    label: str
    policy: dict[str, Any]
    engines: int | None
    """fewest engines meeting the target (None: not met within max_engines)."""
    step_s: float | None
    tried: dict[int, float] = field(default_factory=dict)
    """engine count -> mean step time (s) of every simulated candidate."""
    best_step_s: float | None = None
    """the fastest step simulated (at the most engines tried)."""
    needed_engines: int | None = None
    """target not met: engines it would take, extrapolated (None: not met at any count, or met)."""


def _mean_step_s(config: SimConfig, engines: int, policy: Any, trace: Any, profile: Any) -> float:
    cfg = copy.deepcopy(config)
    cfg.cluster.engines = engines
    res = Simulator(cfg, trace=trace, profile=profile).run(policy, show_progress=False)
    steps = res.summary["steps"]
    return sum(s["step_s"] for s in steps) / len(steps)


def fewest_engines(config: SimConfig, step_time: float, policy: Any, *, max_engines: int = 4096,
                   trace: Any = None, profile: Any = None) -> tuple[int | None, dict[int, float]]:
    """Smallest engine count with mean step time <= ``step_time`` (doubling, then bisection)."""
    tried: dict[int, float] = {}

    def f(e: int) -> float:
        if e not in tried:
            tried[e] = _mean_step_s(config, e, policy, trace, profile)
            say(f"plan: {policy.name} with {e} engines -> {tried[e]:.1f} s per step")
        return tried[e]

    hi = 1
    while f(hi) > step_time:
        if hi >= max_engines:
            return None, tried
        hi = min(hi * 2, max_engines)
    lo = hi // 2  # f(lo) > target (or lo == 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if f(mid) <= step_time:
            hi = mid
        else:
            lo = mid
    return hi, tried


def extrapolate(tried: dict[int, float], step_time: float) -> tuple[float, int | None]:
    """(the floor a, the engines needed) from step(e) ~ a + b / e through the two largest counts
    tried: past the knee the per-engine work shrinks as 1/e and the longest rollout stays. None when
    the floor a itself is above the target (no engine count meets it)."""
    (e1, s1), (e2, s2) = sorted(tried.items())[-2:] if len(tried) > 1 else (2 * [min(tried.items())])
    if e1 == e2 or s1 <= s2:
        return s2, None
    b = (s1 - s2) / (1.0 / e1 - 1.0 / e2)
    a = s2 - b / e2
    return a, (None if a >= step_time else int(math.ceil(b / (step_time - a))))


def plan(config: SimConfig, step_time: float, *, max_engines: int = 4096) -> list[PlanRow]:
    """Fewest engines meeting ``step_time``, without speculation and with the config's policy."""
    if not step_time > 0:
        raise SpecrollError(f"step time must be > 0, got {step_time}", field="--step-time",
                            fix="pass --step-time SECONDS, e.g. 600")
    if max_engines < 1:
        raise SpecrollError(f"must be >= 1, got {max_engines}", field="--max-engines",
                            fix="pass --max-engines N with N >= 1 (default 4096)")
    from specroll.calibration import load_profile
    from specroll.policies import make_policy
    from specroll.simulator._workload import load_trace

    profile = load_profile(config.profile_name(), expect_model=config.model.name)
    trace = load_trace(config)
    rows = []
    for label, policy in (("no speculation", make_policy("ar")), ("speculation", config.make_policy())):
        engines, tried = fewest_engines(config, step_time, policy, max_engines=max_engines, trace=trace,
                                        profile=profile)
        best = min(tried.values())
        rows.append(PlanRow(label, policy.to_dict(), engines, None if engines is None else tried[engines],
                            dict(sorted(tried.items())), best_step_s=best,
                            needed_engines=None if engines is not None else extrapolate(tried, step_time)[1]))
    return rows


@register_summary
class PlanSummary(Summary):
    """plan.json of `specroll plan`."""

    kind: Literal["plan"] = "plan"
    step_time_s: float
    tp: int
    model: str
    profile: str
    met: bool
    """every row met the target within max_engines."""
    rows: list[dict[str, Any]]


def plan_summary(rows: list[PlanRow], step_time: float, config: SimConfig) -> PlanSummary:
    return PlanSummary(step_time_s=step_time, tp=config.cluster.tp, model=config.model.name,
                       profile=config.profile_name(), met=all(r.engines is not None for r in rows),
                       rows=[{"label": r.label, "policy": r.policy, "engines": r.engines, "step_s": r.step_s,
                              "best_step_s": r.best_step_s, "needed_engines_extrapolated": r.needed_engines,
                              "tried": {str(k): v for k, v in r.tried.items()}} for r in rows])


def format_plan(rows: list[PlanRow], step_time: float, config: SimConfig) -> str:
    lines = [f"fewest engines (x tp{config.cluster.tp}) for a mean RL step <= {step_time:g} s "
             f"({config.model.name}, {config.profile_name()})", "",
             f"{'':<16} {'policy':<24} {'engines':>8} {'GPUs':>6} {'step_s':>9}"]
    for r in rows:
        pol = f"{r.policy['policy']} {r.policy['params'] or ''}".strip()
        eng = "-" if r.engines is None else str(r.engines)
        gpus = "-" if r.engines is None else str(r.engines * config.cluster.tp)
        st = "-" if r.step_s is None else f"{r.step_s:.1f}"
        lines.append(f"{r.label:<16} {pol[:24]:<24} {eng:>8} {gpus:>6} {st:>9}")
    for r in rows:
        if r.engines is None:
            most = max(r.tried)
            lines.append(f"{r.label}: not met with up to {most} engines; best {r.best_step_s:.1f} s per "
                         "step; " + (f"about {r.needed_engines:,} engines would meet it (extrapolated: "
                            "step ~ a + b / engines through the two largest counts tried)"
                            if r.needed_engines is not None else
                            "no engine count would: the longest rollouts alone take longer"))
    return "\n".join(lines)
