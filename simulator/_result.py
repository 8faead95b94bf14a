"""SimResult: the typed summary (summary.json) and the tables of one simulation.

The summary is a declared model (:class:`SimSummary`, kind ``simulate``): a key the simulator
writes must be declared here, so a rename fails in the tests, not silently in a report. Tables
come as pandas DataFrames in the Python API and as Parquet on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import ConfigDict

from specroll.core.fileio import atomic_path
from specroll.core.results import Record, Summary, register_summary

# Summary keys that depend on the machine's speed; tests drop them to compare runs bit for bit.
WALL_KEYS = ("wall_s", "acceptance_wall_s", "kernel_wall_s", "tokens_per_wall_s")


class StepSummary(Record):
    """One RL step. Features add their own figures (partial rollouts, drafter training): allowed
    as extra keys, declared by the feature that writes them (simulator/_simulate.py)."""

    model_config = ConfigDict(extra="allow")
    step: int
    rollouts: int
    rollout_s: float
    train_s: float
    sync_s: float
    step_s: float
    tokens: int
    iterations: int
    kernel_iterations: int
    request_iterations: int
    tokens_per_request_iteration: float
    drafted_tokens: int
    accepted_tokens: int
    wasted_draft_tokens: int
    lossy_tokens: int
    preemptions: int
    prefill_s: float
    engine_busy_s: float
    gpu_busy_fraction: float
    p50_end_s: float


class TrainStepSummary(Record):
    """Asynchronous RL: one training step (simulator/_async.py)."""

    step: int
    rollouts: int
    tokens: int
    """response tokens of its batch."""
    wait_s: float
    """the trainer's wait for this batch since its previous step ended."""
    train_s: float
    sync_s: float
    staleness_max: int
    """versions between the step and the oldest weights its rollouts started under."""
    staleness_mean: float
    off_policy_tokens: int
    """its tokens generated under older weights than the step's."""


class VersionSummary(Record):
    """Asynchronous RL: one weight version on the engines."""

    version: int
    start_s: float
    """when it was published (0: the initial weights)."""
    end_s: float
    """when the next one was published (the run's end for the last)."""
    tokens: int
    """tokens generated under it."""
    tokens_per_s: float


@register_summary
class SimSummary(Summary):
    """summary.json of `specroll simulate` (and every Simulator.run)."""

    kind: Literal["simulate"] = "simulate"
    policy: dict[str, Any]
    acceptance: dict[str, Any]
    model: str
    profile: str
    engines: int
    tp: int
    max_batch: int
    dispatch: str
    kv_capacity_tokens: int
    kmax: int | None
    seed: int
    makespan_s: float
    """simulated seconds of all RL steps: rollout + training + weight sync."""
    rollout_s: float
    train_s: float
    sync_s: float
    tokens: int
    rollouts: int
    iterations: int
    kernel_iterations: int
    request_iterations: int
    mean_accepted_per_iteration: float
    """accepted draft tokens per request iteration (the target adds one more token each)."""
    tokens_per_request_iteration: float
    """tokens emitted per request iteration: 1 + accepted (+ the prefill's first token)."""
    drafted_tokens: int
    accepted_tokens: int
    wasted_draft_tokens: int
    preemptions: int
    gpu_busy_fraction: float
    lossy: bool
    lossy_tokens: int
    lossy_fraction: float
    off_policy_fraction: float
    drafter: dict[str, Any] | None = None
    lossy_method: dict[str, Any] | None = None
    partial: dict[str, Any] | None = None
    completed_rollouts: int | None = None
    completed_tokens: int | None = None
    off_policy_tokens: int | None = None
    unfinished_at_end: int | None = None
    drafter_train_s: float | None = None
    rl: dict[str, Any] | None = None
    """asynchronous RL: mode, staleness, batch, sync."""
    train_steps: list[TrainStepSummary] | None = None
    versions: list[VersionSummary] | None = None
    staleness_max: int | None = None
    staleness_mean: float | None = None
    engine_busy_s: float | None = None
    """engine-seconds of iterations, prefills and weight loads (idle excluded)."""
    trainer_busy_s: float | None = None
    trainer_gpus: int | None = None
    engine_busy_fraction: float | None = None
    """engine_busy_s / (engines x makespan_s)."""
    trainer_busy_fraction: float | None = None
    """trainer_busy_s / makespan_s."""
    steps: list[StepSummary]
    wall_s: float
    acceptance_wall_s: float
    kernel_wall_s: float
    tokens_per_wall_s: float

    # Figures of optional features (a [drafter] table, lossy acceptance, partial rollouts, drafter
    # training): absent from the file when the feature is off.
    _OPTIONAL: ClassVar[tuple[str, ...]] = (
        "drafter", "lossy_method", "partial", "completed_rollouts", "completed_tokens",
        "off_policy_tokens", "unfinished_at_end", "drafter_train_s", "rl", "train_steps", "versions",
        "staleness_max", "staleness_mean", "engine_busy_s", "trainer_busy_s", "trainer_gpus",
        "engine_busy_fraction", "trainer_busy_fraction")

    def to_json(self) -> dict[str, Any]:
        d = super().to_json()
        return {k: v for k, v in d.items() if not (v is None and k in self._OPTIONAL)}

    def deterministic(self) -> dict[str, Any]:
        """The JSON form without the wall-clock fields (what a same-seed rerun reproduces exactly)."""
        return {k: v for k, v in self.to_json().items() if k not in WALL_KEYS}


@dataclass
class SimResult:
    summary: SimSummary
    columns: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    """the tables as numpy columns: requests, engines, drafter_training (see the properties)."""

    @property
    def requests(self) -> pd.DataFrame:
        """Per rollout: step, prompt_id, sample, engine, response_len, start_s, end_s, iterations, ..."""
        return pd.DataFrame(self.columns.get("requests", {}))

    @property
    def engines(self) -> pd.DataFrame:
        """Per engine over time (sampled): step, engine, time_s, batch_size, iter_time_s."""
        return pd.DataFrame(self.columns.get("engines", {}))

    @property
    def training(self) -> pd.DataFrame:
        """Drafter training on idle engines (adaptive-drafter source): step, engine, start_s, end_s."""
        return pd.DataFrame(self.columns.get("drafter_training", {}))

    @property
    def versions(self) -> pd.DataFrame:
        """Asynchronous RL: one row per weight version (version, start_s, end_s, tokens, tokens_per_s)."""
        return pd.DataFrame(self.columns.get("versions", {}))

    @property
    def steps(self) -> pd.DataFrame:
        """One row per RL step (the summary's steps)."""
        return pd.DataFrame([s.model_dump() for s in self.summary.steps])

    @property
    def makespan_s(self) -> float:
        return float(self.summary.makespan_s)

    def deterministic_summary(self) -> dict[str, Any]:
        return self.summary.deterministic()

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """summary.json and the Parquet tables, each written atomically."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"summary": self.summary.write(out / "summary.json")}
        for name in ("requests", "engines", "drafter_training", "versions"):
            cols = self.columns.get(name)
            if not cols:
                continue
            path = out / f"{name}.parquet"
            with atomic_path(path) as tmp:
                pq.write_table(pa.table(cols), tmp, compression="zstd")
            paths[name] = path
        return paths

    def format(self) -> str:
        """The one-screen summary printed by `specroll simulate`."""
        s = self.summary
        lines = [
            f"policy {s.policy['policy']} {s.policy['params']}   acceptance {s.acceptance}",
            f"cluster {s.engines} engines x tp{s.tp}  model {s.model}  profile {s.profile}",
            "",
            f"{'step':>4} {'rollout_s':>10} {'train_s':>9} {'sync_s':>7} {'step_s':>9} {'tokens':>11} "
            f"{'tok/iter':>8} {'busy':>5}",
        ]
        for st in s.steps:
            lines.append(
                f"{st.step:>4} {st.rollout_s:>10.2f} {st.train_s:>9.2f} {st.sync_s:>7.2f} "
                f"{st.step_s:>9.2f} {st.tokens:>11,} {st.tokens_per_request_iteration:>8.2f} "
                f"{st.gpu_busy_fraction:>5.2f}")
        lines += [
            "",
            f"makespan {s.makespan_s:.2f} s   rollout {s.rollout_s:.2f} s   train {s.train_s:.2f} s",
            f"tokens {s.tokens:,}   accepted/iter {s.mean_accepted_per_iteration:.3f}   "
            f"drafted {s.drafted_tokens:,}   wasted {s.wasted_draft_tokens:,}   "
            f"GPU busy {s.gpu_busy_fraction:.3f}",
            "  tok/iter: tokens per request iteration (1 + accepted drafts); accepted/iter: accepted "
            "draft tokens per request iteration",
            f"simulated on {s.profile}; wall {s.wall_s:.2f} s, {s.tokens_per_wall_s / 1e6:.1f} M simulated "
            "tokens per wall second",
        ]
        return "\n".join(lines)
