"""Seer-style marginal-benefit allocation of a per-iteration draft-token budget."""

from __future__ import annotations

import dataclasses

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.policies._alloc import has_confidence
from specroll.policies._base import Policy, register_policy
from specroll.policies._state import PolicyState
from specroll.policies._tuner import tunable

_LEVELS_PER_OCTAVE = 32  # gain resolution of the budget cutoff: 2^(1/32) ~ 2 %
_N_LEVELS = 40 * _LEVELS_PER_OCTAVE


def worthwhile_cells(state: PolicyState, k_max: int, min_gain: float,
                     prior_alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, j, gain) of every draft token whose marginal gain is >= min_gain.

    The j-th token (0-based) adds one accepted token exactly when tokens 0..j are all accepted,
    so its marginal gain is the proposal's path probability prod_{i<=j} p_i (non-increasing in
    j). Without a confidence signal, p_i = the request's acceptance EMA (``prior_alpha`` before
    any), so the gains are a^(j+1).
    """
    n = state.n
    floor = max(min_gain, 1e-12)
    rows, js, gains = [], [], []
    signal = np.zeros(n, dtype=bool)
    if has_confidence(state) and k_max > 0:
        conf = state.draft_conf
        signal = ~np.isnan(conf[:, 0])
        idx = np.flatnonzero(signal)
        p = np.ones(idx.size)
        for j in range(k_max):  # column by column over the rows still above the floor
            p = p * conf[idx, j]
            alive = p >= floor
            idx, p = idx[alive], p[alive]
            if idx.size == 0:
                break
            rows.append(idx)
            js.append(np.full(idx.size, j))
            gains.append(p)
    ns = np.flatnonzero(~signal)
    if ns.size and k_max > 0:
        a = state.accept_ema[ns]
        a = np.clip(np.where(np.isnan(a), prior_alpha, a), 0.0, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            cnt = np.floor(np.log(floor) / np.log(a) + 1e-9)
        cnt = np.clip(np.nan_to_num(np.where(a >= 1.0, k_max, cnt), nan=0.0), 0, k_max).astype(np.int64)
        r = np.repeat(ns, cnt)
        j = np.arange(r.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        rows.append(r)
        js.append(j)
        gains.append(np.repeat(a, cnt) ** (j + 1))
    if not rows:
        z = np.zeros(0, dtype=np.int64)
        return z, z, np.zeros(0)
    return np.concatenate(rows), np.concatenate(js), np.concatenate(gains)


@register_policy("seer")
class SeerPolicy(Policy):
    """Seer (Qin et al., "Seer: Online Context Learning for Fast Synchronous LLM RL", arXiv 2511.14617;
    its adaptive grouped speculative decoding): allocate a per-iteration token budget where it
    buys the most.

    Each engine's iteration may verify ``tokens_per_iter`` query tokens in all (one per request
    is the ordinary decode, the rest is the draft budget; -1 = no budget). Draft tokens are
    handed out greedily by marginal gain (:func:`worthwhile_cells`) across the engine's
    requests, never below ``min_gain`` (a token less likely than that to be accepted is not
    worth its verification), at most ``k_max`` per request. Each request's gains are
    non-increasing, so the greedy result is a per-engine gain cutoff; it is found from a
    per-engine histogram of log-gains (2 % wide levels; ties inside the cutoff level go to the
    earlier requests), which keeps decide() O(cells) instead of a sort. Defaults are ours.
    """

    uses_confidence = True

    @dataclasses.dataclass
    class Params:
        tokens_per_iter: int = dataclasses.field(default=512, metadata=tunable(64, 4096, log=True))
        min_gain: float = dataclasses.field(default=0.3, metadata=tunable(0.0, 0.9))
        k_max: int = dataclasses.field(default=16, metadata=tunable(2, 32, draft=True))
        prior_alpha: float = 0.7

    def validate(self) -> None:
        p = self.params
        if not 0.0 <= p.min_gain <= 1.0 or not 0.0 <= p.prior_alpha <= 1.0:
            raise SpecrollError("min_gain and prior_alpha must be in [0, 1]", field="min_gain")
        if p.k_max < 0:
            raise SpecrollError(f"k_max must be >= 0, got {p.k_max}", field="k_max")

    def decide(self, state: PolicyState) -> np.ndarray:
        p = self.params
        n, E = state.n, state.n_engines
        k_max = min(int(p.k_max), state.kmax)
        rows, js, gains = worthwhile_cells(state, k_max, p.min_gain, p.prior_alpha)
        k = np.bincount(rows, minlength=n).astype(np.int32)
        if p.tokens_per_iter < 0 or rows.size == 0:
            return k
        budget = np.maximum(p.tokens_per_iter - state.batch_size, 0).astype(np.int64)
        eng = state.engine[rows].astype(np.int64)
        demand = np.bincount(eng, minlength=E)
        over = demand > budget
        if not over.any():
            return k
        level = np.clip((-np.log2(np.maximum(gains, 1e-300)) * _LEVELS_PER_OCTAVE).astype(np.int64), 0,
                        _N_LEVELS - 1)
        cum = np.cumsum(np.bincount(eng * _N_LEVELS + level, minlength=E * _N_LEVELS).reshape(E, _N_LEVELS),
                        axis=1)
        # Cutoff level: the first whose cumulative count exceeds the budget (over engines have one).
        cut = np.where(over, np.argmax(cum > budget[:, None], axis=1), _N_LEVELS)
        before = np.where(cut > 0, cum[np.arange(E), np.maximum(cut - 1, 0)], 0)
        left = budget - np.where(over, before, 0)
        cell_cut = cut[eng]
        chosen = level < cell_cut
        at = np.flatnonzero(level == cell_cut)
        if at.size:
            at = at[np.lexsort((js[at], rows[at]))]  # rows are engine-ordered: engine, request, j
            e_at = eng[at]
            rank = np.arange(at.size) - np.searchsorted(e_at, e_at, side="left")
            chosen[at[rank < left[e_at]]] = True
        return np.bincount(rows[chosen], minlength=n).astype(np.int32)
