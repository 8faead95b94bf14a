"""SimResult: the summary (summary.json) and the Parquet timelines of one simulation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specroll.core.fileio import atomic_path, write_json

# Summary keys that depend on the machine's speed; tests drop them to compare runs bit for bit.
WALL_KEYS = ("wall_s", "acceptance_wall_s", "kernel_wall_s", "tokens_per_wall_s")


@dataclass
class SimResult:
    summary: dict[str, Any]
    requests: dict[str, np.ndarray] = field(default_factory=dict)
    """per rollout: step, prompt_id, sample, engine, response_len, start_s, end_s, iterations, ..."""
    engines: dict[str, np.ndarray] = field(default_factory=dict)
    """per engine over time (sampled): step, engine, time_s, batch_size, iter_time_s."""
    training: dict[str, np.ndarray] = field(default_factory=dict)
    """drafter training on idle engines (adaptive-drafter source): step, engine, start_s, end_s."""

    @property
    def makespan_s(self) -> float:
        return float(self.summary["makespan_s"])

    def deterministic_summary(self) -> dict[str, Any]:
        """The summary without the wall-clock fields (what a same-seed rerun reproduces exactly)."""
        return {k: v for k, v in self.summary.items() if k not in WALL_KEYS}

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """summary.json, requests.parquet and engines.parquet, each written atomically."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"summary": write_json(out / "summary.json", self.summary)}
        for name, cols in (("requests", self.requests), ("engines", self.engines),
                           ("drafter_training", self.training)):
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
            f"policy {s['policy']['policy']} {s['policy']['params']}   acceptance {s['acceptance']}",
            f"cluster {s['engines']} engines x tp{s['tp']}  model {s['model']}  profile {s['profile']}",
            "",
            f"{'step':>4} {'rollout_s':>10} {'train_s':>9} {'sync_s':>7} {'step_s':>9} {'tokens':>11} "
            f"{'tok/iter':>8} {'busy':>5}",
        ]
        for st in s["steps"]:
            lines.append(
                f"{st['step']:>4} {st['rollout_s']:>10.2f} {st['train_s']:>9.2f} {st['sync_s']:>7.2f} "
                f"{st['step_s']:>9.2f} {st['tokens']:>11,} {st['tokens_per_request_iteration']:>8.2f} "
                f"{st['gpu_busy_fraction']:>5.2f}")
        lines += [
            "",
            f"makespan {s['makespan_s']:.2f} s   rollout {s['rollout_s']:.2f} s   train {s['train_s']:.2f} s",
            f"tokens {s['tokens']:,}   accepted/iter {s['mean_accepted_per_iteration']:.3f}   "
            f"drafted {s['drafted_tokens']:,}   wasted {s['wasted_draft_tokens']:,}   "
            f"GPU busy {s['gpu_busy_fraction']:.3f}",
            f"wall {s['wall_s']:.2f} s   {s['tokens_per_wall_s'] / 1e6:.1f} M simulated tokens per wall "
            "second",
        ]
        return "\n".join(lines)
