"""DAS: length-aware draft budgets (Long / Medium / Short) and their makespan-optimal closed form."""

from __future__ import annotations

import dataclasses

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.policies._alloc import serve_quota
from specroll.policies._base import Policy, register_policy
from specroll.policies._history import LONG, MEDIUM, class_horizon, length_class
from specroll.policies._state import PolicyState
from specroll.policies._tuner import tunable

_MODES = ("schedule", "closed_form")


def makespan_factor(k: np.ndarray, alpha: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """(rho + k) / E[tokens per iteration at draft k]: makespan in units of L * c_t * s."""
    k = np.asarray(k, dtype=np.float64)
    return (rho + k) * (1.0 - alpha) / (1.0 - alpha ** (k + 1.0))


def das_optimal_k(alpha: np.ndarray | float, rho: np.ndarray | float, k_max: int) -> np.ndarray:
    """int: the makespan-minimizing draft length per speculating request (derivation below).

    Model (DAS's makespan model, with draft costs priced per token). An engine's iteration costs
    ``T = C + c_t * sum_i k_i`` (C: the iteration's cost without drafts, i.e. fixed overhead +
    per-request cost; c_t: one more verified draft token). With s requests drafting k each and
    per-token acceptance alpha, a request gains ``a(k) = (1 - alpha^(k+1)) / (1 - alpha)`` tokens
    per iteration, so the long request with L tokens left finishes after L / a(k) iterations:

        M(k) = L * c_t * s * (rho + k) / a(k),      rho = C / (c_t * s).

    dM/dk = 0 with x = alpha^(k+1), u = ln x:  1 - x + x (rho + k) ln(alpha) = 0, and since
    (rho + k) ln(alpha) = u + lam with lam = (rho - 1) ln(alpha):  e^u (1 - lam - u) = 1.
    Put w = 1 - lam - u: w e^(-w) = e^(lam - 1), so w = -W(-e^(lam - 1)) (Lambert W). k >= 0
    needs u < 0, i.e. w > 1 - lam >= 1, the W_{-1} branch:

        k* = (1 - lam + W_{-1}(-e^(lam - 1))) / ln(alpha) - 1.

    A budget that prices each speculating request's drafts as one token (c_t * s instead of
    c_t * sum_i k_i) is exact only when every k_i = 1; here the draft cost grows with k. The
    real-valued k* is rounded to whichever of floor/ceil (or 0) has the smaller M, capped at
    k_max. rho < 1 (drafts cost more than the whole base iteration) has no interior optimum:
    the comparison with 0 and 1 decides.
    """
    from scipy.special import lambertw

    alpha = np.clip(np.asarray(alpha, dtype=np.float64), 1e-6, 1 - 1e-9)
    rho = np.asarray(rho, dtype=np.float64)
    alpha, rho = np.broadcast_arrays(alpha, rho)
    ln_a = np.log(alpha)
    lam = (rho - 1.0) * ln_a
    arg = -np.exp(np.minimum(lam - 1.0, -1.0))  # domain of W_{-1}: [-1/e, 0)
    w = np.real(lambertw(arg, -1))
    k_star = np.where(lam <= 0, (1.0 - lam + w) / ln_a - 1.0, 0.0)
    k_star = np.clip(np.nan_to_num(k_star, nan=0.0), 0.0, k_max)
    lo, hi = np.floor(k_star), np.minimum(np.ceil(k_star), k_max)
    cands = np.stack([np.zeros_like(lo), np.minimum(1.0, k_max) + 0 * lo, lo, hi])
    best = np.argmin(makespan_factor(cands, alpha, rho), axis=0)
    return np.take_along_axis(cands, best[None], 0)[0].astype(np.int32)


@register_policy("das")
class DASPolicy(Policy):
    """DAS (Shao et al., "Beat the long tail", arXiv 2511.13841, length-aware speculation policy).

    Each request gets a length class from its prompt's history and its partial length
    (:func:`policies.length_class`): Short requests do not speculate, Medium ones get a small
    budget, Long ones (which set the makespan) a large one. Budgets grow as the engine's batch
    shrinks (verification is nearly free in the memory-bound tail): ``k_c * (full_batch / B)^growth``,
    capped at ``k_max``. Each engine's iteration has a draft-token quota (``token_quota`` query
    tokens minus one per request; -1 = none), served Long first, then Medium.

    ``mode="closed_form"`` replaces the Long budget by :func:`das_optimal_k` with the engine's
    ``rho = (base_tokens + per_request_tokens * B) / s`` (costs in verified-token units, s = the
    engine's speculating requests) and acceptance ``alpha``; Medium gets the same fraction of it
    as ``k_medium / k_long``. Default values are ours (the classes' thresholds follow DAS's
    description of Long / Medium / Short by history); the tuner searches them.
    """

    @dataclasses.dataclass
    class Params:
        mode: str = "schedule"
        long_frac: float = dataclasses.field(default=0.5, metadata=tunable(0.1, 0.9))
        short_frac: float = dataclasses.field(default=0.125, metadata=tunable(0.0, 0.5))
        k_long: int = dataclasses.field(default=6, metadata=tunable(1, 16, draft=True))
        k_medium: int = dataclasses.field(default=2, metadata=tunable(0, 8, draft=True))
        growth: float = dataclasses.field(default=0.5, metadata=tunable(0.0, 1.5))
        full_batch: int = 128
        k_max: int = dataclasses.field(default=16, metadata=tunable(2, 32, draft=True))
        token_quota: int = dataclasses.field(default=-1,
                                             metadata=tunable(choices=(-1, 256, 512, 1024, 2048)))
        alpha: float = 0.7
        base_tokens: float = 64.0
        per_request_tokens: float = 1.0

    def validate(self) -> None:
        p = self.params
        if p.mode not in _MODES:
            raise SpecrollError(f"unknown mode '{p.mode}'", field="mode",
                                fix=f"use one of {', '.join(_MODES)}")
        if not 0.0 <= p.short_frac <= p.long_frac:
            raise SpecrollError(f"need 0 <= short_frac <= long_frac, got {p.short_frac}, {p.long_frac}",
                                field="short_frac")
        if min(p.k_long, p.k_medium, p.k_max) < 0 or p.full_batch < 1 or p.growth < 0:
            raise SpecrollError("budgets must be >= 0, full_batch >= 1, growth >= 0", field="k_long")
        if not 0.0 < p.alpha < 1.0:
            raise SpecrollError(f"alpha must be in (0, 1), got {p.alpha}", field="alpha")

    def decide(self, state: PolicyState) -> np.ndarray:
        return self._decide(state, self._classes(state))

    def decide_with_horizon(self, state: PolicyState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """decide(), the ``generated`` value from which each request's decision may change, and
        each engine's batch floor (the simulator's windowed kernel contract, ``policies.Policy``).

        An engine's decisions depend only on its requests' length classes (a step function of
        ``generated``: :func:`policies._history.class_horizon`) and on its batch size, through
        the budgets' growth; with a token quota or the closed form they also depend on which
        requests share the engine, so the floor is the batch size itself.
        """
        p = self.params
        cls = self._classes(state)
        h = class_horizon(cls, state.max_len, long_frac=p.long_frac, short_frac=p.short_frac)
        return self._decide(state, cls), h, self._batch_floor(state)

    def _batch_floor(self, state: PolicyState) -> np.ndarray:
        """Per engine, the smallest batch size down to which its Long and Medium budgets stay."""
        p = self.params
        batch = state.batch_size.astype(np.int64)
        if p.mode != "schedule" or p.token_quota >= 0 or batch.size == 0:
            return batch
        k_max = min(int(p.k_max), state.kmax)
        b = np.arange(1, max(int(batch.max()), 1) + 1, dtype=np.float64)
        scale = np.maximum(1.0, p.full_batch / b) ** p.growth  # the same expressions as _decide
        k_long = np.minimum(np.round(p.k_long * scale), k_max)
        k_med = np.minimum(np.round(p.k_medium * scale), k_max)
        change = np.ones(b.shape[0], dtype=bool)
        change[1:] = (k_long[1:] != k_long[:-1]) | (k_med[1:] != k_med[:-1])
        last_change = np.maximum.accumulate(np.where(change, np.arange(1, b.shape[0] + 1), 1))
        return last_change[np.maximum(batch, 1) - 1]

    def _classes(self, state: PolicyState) -> np.ndarray:
        p = self.params
        return length_class(state.predicted_len, state.generated, state.max_len,
                            long_frac=p.long_frac, short_frac=p.short_frac)

    def _decide(self, state: PolicyState, cls: np.ndarray) -> np.ndarray:
        p = self.params
        k_max = min(int(p.k_max), state.kmax)
        b = np.maximum(state.batch_size, 1).astype(np.float64)
        if p.mode == "schedule":
            scale = np.maximum(1.0, p.full_batch / b) ** p.growth
            k_long_e = np.minimum(np.round(p.k_long * scale), k_max)
        else:
            spec = np.bincount(state.engine, weights=(cls != 0), minlength=state.n_engines)
            rho = (p.base_tokens + p.per_request_tokens * b) / np.maximum(spec, 1.0)
            k_long_e = das_optimal_k(p.alpha, rho, k_max).astype(np.float64)
            scale = k_long_e / max(p.k_long, 1)
        k_med_e = np.minimum(np.round(p.k_medium * scale), k_max)
        if p.token_quota < 0:
            # No quota: each request's budget is its (engine, class) cell of a small table, one
            # gather instead of per-request where()s (the same integers: budgets are whole floats).
            table = np.zeros((state.n_engines, 3), dtype=np.int32)
            table[:, MEDIUM] = k_med_e
            table[:, LONG] = k_long_e
            return table.ravel()[state.engine * 3 + cls]
        want = np.where(cls == LONG, k_long_e[state.engine],
                        np.where(cls == MEDIUM, k_med_e[state.engine], 0.0))
        quota = np.maximum(p.token_quota - state.batch_size, 0).astype(np.float64)
        return serve_quota(want, state.engine, quota, cls, (LONG, MEDIUM))
