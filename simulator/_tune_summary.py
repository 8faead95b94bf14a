"""tune_summary.json as a declared model (kind ``tune``): what `specroll tune` found and what it
measured, read back with ``specroll.core.results.read_summary``."""

from __future__ import annotations

from typing import Any, Literal

from specroll.core.results import Record, Summary, register_summary


class RunTimes(Record):
    makespan_s: float
    """simulated seconds of all RL steps: rollout + training + weight sync."""
    rollout_s: float


class TuneRun(Record):
    """One (trace, seed) simulation of the objective: the best policy, the defaults and AR on it."""

    label: str
    best: RunTimes
    defaults: RunTimes
    ar: RunTimes


@register_summary
class TuneSummary(Summary):
    """tune_summary.json of `specroll tune` (and every simulator.tune_family)."""

    kind: Literal["tune"] = "tune"
    family: str
    study: str
    storage: str
    """where the study lives (a URL's password masked)."""
    config: str | None
    objective: str
    n_complete: int
    trials_run_now: int
    """trials completed while this command ran (by any worker on the study)."""
    workers: int
    sampler_seed: int
    best_value_s: float
    best_trial: int
    best_params: dict[str, Any]
    pinned: dict[str, Any]
    defaults_value_s: float
    defaults_policy: dict[str, Any]
    """the family's defaults, draft lengths clipped to kmax as the first trial's (see clipped)."""
    ar_value_s: float
    values: list[float]
    """objective of each complete trial, in trial order."""
    runs: list[TuneRun]
    kmax: int | None
    """the largest draft the simulation expresses (drafter / acceptance model's proposal cap)."""
    search_space: dict[str, Any]
    clipped: dict[str, Any]
    """draft-length bounds clipped to kmax: {name: {declared: [lo, hi], searched: [lo, hi]}}."""
    identity: dict[str, Any]
    """what the study measures (recorded in the study and in best_policy.json)."""
    wall_s: float
    trials_per_min: float
