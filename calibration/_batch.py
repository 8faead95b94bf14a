"""Per-engine aggregates of one iteration: what the cost model prices.

An iteration of an engine runs a batch of requests; request i brings q_i query tokens (1 for a
decode, K_i + 1 to verify a K_i-token draft, a chunk for prefill) on top of c_i cached tokens.
The cost model only needs a few sums and maxima per engine, so the simulator computes these
with bincount / reduceat over all engines at once and never builds per-request objects.
Maxima matter because a padded engine pays for the longest request, a ragged one for the sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class IterationBatch:
    """Arrays of shape (E,) over engines (E may be 1)."""

    n: np.ndarray
    """requests in the iteration (0 = the engine is idle; its time is 0)."""
    q_sum: np.ndarray
    """query tokens of all requests."""
    q_max: np.ndarray
    """query tokens of the longest request (padding to q_max is what a padded verify pays)."""
    c_sum: np.ndarray
    """cached context tokens of all requests (KV bytes read)."""
    c_max: np.ndarray
    """context of the longest request (padded attention reads n * c_max)."""
    qc_sum: np.ndarray
    """sum of q_i * (c_i + (q_i + 1) / 2): attention (query, key) pairs, causal within the query."""
    draft_tokens: np.ndarray
    """draft tokens proposed this iteration (drafter cost)."""

    @classmethod
    def from_requests(cls, q: np.ndarray, c: np.ndarray, engine: np.ndarray | None = None,
                      n_engines: int = 1, draft: np.ndarray | None = None) -> IterationBatch:
        """Aggregate per-request query lengths ``q`` and contexts ``c`` by engine index."""
        q = np.asarray(q, dtype=np.float64)
        c = np.asarray(c, dtype=np.float64)
        eng = np.zeros(q.shape[0], dtype=np.int64) if engine is None else np.asarray(engine)
        d = np.zeros_like(q) if draft is None else np.asarray(draft, dtype=np.float64)
        n = np.bincount(eng, minlength=n_engines).astype(np.float64)
        q_max = np.zeros(n_engines)
        c_max = np.zeros(n_engines)
        np.maximum.at(q_max, eng, q)
        np.maximum.at(c_max, eng, c)
        return cls(
            n=n,
            q_sum=np.bincount(eng, weights=q, minlength=n_engines),
            q_max=q_max,
            c_sum=np.bincount(eng, weights=c, minlength=n_engines),
            c_max=c_max,
            qc_sum=np.bincount(eng, weights=q * (c + (q + 1.0) / 2.0), minlength=n_engines),
            draft_tokens=np.bincount(eng, weights=d, minlength=n_engines),
        )
