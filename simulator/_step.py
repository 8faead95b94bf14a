"""What the engine kernel and its windowed fast path share: the request matrix's rows, the engine
spec, a step's outcome, the timeline sampler and two token identities."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from specroll.simulator._acceptance import StepRollouts

# Rows of the request matrix. GEN, POS and CTX are adjacent: one in-place add advances all three.
ENG, GID, GEN, POS, CTX, LEN, PLEN, LASTK, LASTACC = range(9)
_NROWS = 9
PRED, EMA = range(2)


@dataclass
class EngineSpec:
    n_engines: int
    max_batch: int
    kv_capacity: int
    """KV-cache tokens one engine holds (CostProfile.kv_capacity_tokens)."""
    kv_watermark: float = 0.01
    """fraction of the KV budget admission keeps free (vLLM's watermark), to limit preemption."""


@dataclass
class StepOutcome:
    """What one RL step's rollout phase did (per rollout arrays in trace order)."""

    engine: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    iterations: np.ndarray
    preemptions: np.ndarray
    engine_busy_s: np.ndarray
    engine_iterations: np.ndarray
    engine_prefill_s: np.ndarray
    drafted: int = 0
    accepted: int = 0
    lossy: int = 0
    """accepted tokens the target alone would not have produced (lossy acceptance)."""
    progress: np.ndarray | None = None
    """per rollout, with a stop time: tokens generated when the step stopped for those it left
    unfinished (-1: finished, or never started)."""
    request_iterations: int = 0
    kernel_iterations: int = 0
    timeline: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def rollout_s(self) -> float:
        return float(self.end_s.max()) if self.end_s.size else 0.0


class Timeline:
    """Per-engine samples every ``every`` kernel iterations (batch size and iteration time)."""

    def __init__(self, every: int) -> None:
        self.every = max(1, int(every))
        self.rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, it: int, clock: np.ndarray, cnt: np.ndarray, t: np.ndarray) -> None:
        self.rows.append((it, clock.copy(), cnt.copy(), t.copy()))

    def arrays(self, n_engines: int) -> dict[str, np.ndarray]:
        if not self.rows:
            return {}
        k = len(self.rows)
        return {
            "kernel_iteration": np.repeat(np.array([r[0] for r in self.rows], np.int64), n_engines),
            "engine": np.tile(np.arange(n_engines, dtype=np.int32), k),
            "time_s": np.concatenate([r[1] for r in self.rows]),
            "batch_size": np.concatenate([r[2] for r in self.rows]).astype(np.int32),
            "iter_time_s": np.concatenate([r[3] for r in self.rows]),
        }


def tree_pairs(kmax: int, width: int = 1) -> np.ndarray:
    """int64 (kmax+1,): attention (query, key) pairs inside a verify of depth k, by k, beyond the
    (query tokens x cached context) ones. A chain verifies k+1 causal tokens: (k+1)(k+2)/2 pairs.
    A tree of ``width`` branches that share only the pending token verifies width*k + 1 tokens: the
    pending one sees itself (1 pair) and a node at depth d sees the pending token and its d
    ancestors-or-self (d + 1 pairs): 1 + width * (k + k(k+1)/2), the chain's count when width = 1."""
    k = np.arange(kmax + 1, dtype=np.int64)
    chain = (k + 1) * (k + 2) // 2
    return chain if width == 1 else 1 + width * (chain - 1)


def accepted_total(ro: StepRollouts, req_iters: int) -> int:
    """Accepted draft tokens of a step, from the token identity: each response's token 0 comes
    from its prefill and every request iteration emits accepted + 1 tokens, so no per-iteration
    sum is needed."""
    return int(ro.response_len.sum()) - ro.n - req_iters


