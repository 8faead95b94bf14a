"""Vectorized helpers shared by the families: per-engine sums and quota allocation.

PolicyState arrays are ordered by engine, so per-engine quantities are bincounts over
``state.engine`` and per-request views of them are gathers ``x[state.engine]``.
"""

from __future__ import annotations

import numpy as np


def engine_sum(values: np.ndarray, engine: np.ndarray, n_engines: int) -> np.ndarray:
    """float (E,): sum of per-request ``values`` over each engine's requests."""
    return np.bincount(engine, weights=values, minlength=n_engines)


def serve_quota(want: np.ndarray, engine: np.ndarray, quota: np.ndarray, tier: np.ndarray,
                tiers: tuple[int, ...]) -> np.ndarray:
    """int (n,): grant per-request draft lengths ``want`` within a per-engine token ``quota``.

    Tiers are served in the order given (e.g. Long before Medium): a tier gets what its engine
    has left; when its demand exceeds that, every request of the tier is scaled down by the same
    fraction (rounded down), so no request of a tier is starved by another's position in the
    batch. A negative quota means unlimited. Requests whose tier is not listed get 0.
    """
    n_engines = quota.shape[0]
    left = np.where(quota < 0, np.inf, quota).astype(np.float64)
    out = np.zeros(want.shape[0], dtype=np.int32)
    for t in tiers:
        sel = tier == t
        if not sel.any():
            continue
        e = engine[sel]
        w = want[sel].astype(np.float64)
        demand = np.bincount(e, weights=w, minlength=n_engines)
        frac = np.minimum(1.0, np.divide(left, demand, out=np.ones(n_engines), where=demand > 0))
        give = np.floor(w * frac[e] + 1e-9).astype(np.int32)
        out[sel] = give
        left -= np.bincount(e, weights=give, minlength=n_engines)
    return out
