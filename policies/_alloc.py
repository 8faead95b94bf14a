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
    if (quota < 0).all():  # unlimited: nothing to share
        listed = np.zeros(tier.shape, dtype=bool)
        for t in tiers:  # a few tiers: cheaper than np.isin's sort
            listed |= tier == t
        return np.where(listed, want, 0).astype(np.int32)
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


def has_confidence(state) -> bool:
    """False when the state has no confidence signal (draft_conf would be all NaN).

    Lets a policy skip building and scanning an (n, kmax) matrix of NaN for parametric acceptance.
    """
    return state.conf_fn is not None or state._conf is not None


def confident_prefix(conf: np.ndarray, min_prob: float | np.ndarray, k_max: int) -> np.ndarray:
    """int (n,): leading proposal tokens whose path probability prod_{i<=j} conf[:, i] >= min_prob.

    The probability is non-increasing along the proposal, so this is the longest prefix worth
    drafting at that threshold (0 for NaN rows). Columns are scanned one at a time over the rows
    still above the threshold: cheaper than a full cumprod when most proposals stop early.
    """
    n = conf.shape[0]
    k = np.zeros(n, dtype=np.int32)
    if n == 0 or k_max <= 0:
        return k
    thr = np.broadcast_to(np.asarray(min_prob, dtype=np.float64), (n,))
    p = conf[:, 0].astype(np.float64)
    alive = p >= thr
    idx, p, thr = np.flatnonzero(alive), p[alive], thr[alive]
    for j in range(1, k_max + 1):
        k[idx] = j
        if j == k_max or idx.size == 0:
            break
        p = p * conf[idx, j]
        alive = p >= thr
        idx, p, thr = idx[alive], p[alive], thr[alive]
    return k
