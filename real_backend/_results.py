"""What a real rollout run produced: the typed summary (summary.json, kind ``rollout``) and the
trace, iteration records and decisions behind it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import ConfigDict

from specroll.core.fileio import atomic_path
from specroll.core.results import Record, Summary, register_summary


class RolloutStep(Record):
    """One RL step of real rollouts (wall-clock seconds of this machine)."""

    model_config = ConfigDict(extra="forbid")
    step: int
    makespan_s: float
    tokens: int
    rollouts: int
    iterations: int
    prefills: int
    drafted: int
    accepted: int
    accepted_per_iteration: float
    """accepted draft tokens per decode iteration (engine-wide)."""
    tokens_per_iteration: float
    """new tokens per decode iteration, over the batch."""
    acceptance_rate: float | None
    """accepted over drafted tokens (None when nothing was drafted)."""
    lossy_tokens: int
    lossy_fraction: float
    draft_nodes: int
    draft_wall_s: float
    tokens_per_s: float | None
    mean_response_len: float
    max_response_len: int
    finished_fraction: float
    accuracy: float | None
    """task accuracy: the share of answers that were correct (arithmetic prompts), not acceptance."""


@register_summary
class RolloutSummary(Summary):
    """summary.json of `specroll rollout` (and every real_backend.rollout)."""

    kind: Literal["rollout"] = "rollout"
    config: dict[str, Any]
    steps: list[RolloutStep]
    makespan_s: list[float]
    """per step, wall-clock seconds."""
    total_wall_s: float
    tokens: int
    iterations: int
    accepted: int
    accepted_per_iteration: float
    tokens_per_s: float | None
    drafted: int
    lossy: bool
    lossy_tokens: int
    lossy_fraction: float
    agreement: dict[str, Any] | None = None
    """with ``against_ar``: token agreement with an AR run of the same workload (_agreement.py)."""


@dataclass
class RolloutResult:
    trace: Any
    """traces.Trace: one row per rollout with prompt_token_ids and token_ids."""
    iterations: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    """per request per decode iteration: step, iteration, rid, generated, k, accepted."""
    summary: RolloutSummary
    texts: list[str]

    @property
    def iterations_table(self) -> pd.DataFrame:
        """One row per forward (the iterations.parquet table)."""
        return pd.DataFrame(self.iterations)

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write trace.parquet, iterations.parquet and summary.json into ``out`` (atomically)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from specroll.traces import write_trace

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"trace": out / "trace.parquet", "iterations": out / "iterations.parquet",
                 "summary": out / "summary.json"}
        write_trace(self.trace, paths["trace"])
        table = pa.Table.from_pylist(self.iterations)
        with atomic_path(paths["iterations"]) as tmp:
            pq.write_table(table, tmp)
        self.summary.write(paths["summary"])
        return paths
