"""Seer-style marginal-benefit allocation of a per-iteration draft-token budget."""

from __future__ import annotations

import dataclasses

import numpy as np

from policies._base import Policy, register_policy
from policies._state import PolicyState
from policies._tuner import tunable
from specroll.errors import SpecrollError


def marginal_gains(state: PolicyState, k_max: int, prior_alpha: float) -> np.ndarray:
    """float (n, k_max): expected extra accepted tokens of the j-th draft token of each request.

    The j-th token adds one accepted token exactly when tokens 1..j are all accepted, so its
    marginal gain is the proposal's path probability prod_{i<=j} p_i (non-increasing in j).
    Without a confidence signal, p_i = the request's acceptance EMA (``prior_alpha`` before any).
    """
    conf = state.draft_conf[:, :k_max].astype(np.float64)
    gain = np.cumprod(conf, axis=1)
    no_signal = np.isnan(conf[:, 0]) if k_max > 0 else np.zeros(state.n, bool)
    if no_signal.any():
        a = state.accept_ema[no_signal]
        a = np.clip(np.where(np.isnan(a), prior_alpha, a), 0.0, 1.0)
        gain[no_signal] = a[:, None] ** np.arange(1, k_max + 1)[None, :]
    return gain


@register_policy("seer")
class SeerPolicy(Policy):
    """Seer (Qin et al., "Seer: Online Context Learning for Fast Synchronous LLM RL", arXiv 2511.14617;
    its adaptive grouped speculative decoding): allocate a per-iteration token budget where it
    buys the most.

    Each engine's iteration may verify ``tokens_per_iter`` query tokens in all (one per request
    is the ordinary decode, the rest is the draft budget; -1 = no budget). Draft tokens are
    handed out greedily by marginal gain (:func:`marginal_gains`) across the engine's requests,
    never below ``min_gain`` (a token less likely than that to be accepted is not worth its
    verification), at most ``k_max`` per request. Since each request's gains are
    non-increasing, the greedy result is a per-engine gain cutoff: a request drafts as many
    tokens as it has gains above its engine's cutoff. Defaults are ours.
    """

    uses_confidence = True

    @dataclasses.dataclass
    class Params:
        tokens_per_iter: int = dataclasses.field(default=512, metadata=tunable(64, 4096, log=True))
        min_gain: float = dataclasses.field(default=0.3, metadata=tunable(0.0, 0.9))
        k_max: int = dataclasses.field(default=16, metadata=tunable(2, 32))
        prior_alpha: float = 0.7

    def validate(self) -> None:
        p = self.params
        if not 0.0 <= p.min_gain <= 1.0 or not 0.0 <= p.prior_alpha <= 1.0:
            raise SpecrollError("min_gain and prior_alpha must be in [0, 1]", field="min_gain")
        if p.k_max < 0:
            raise SpecrollError(f"k_max must be >= 0, got {p.k_max}", field="k_max")

    def decide(self, state: PolicyState) -> np.ndarray:
        p = self.params
        k_max = min(int(p.k_max), state.kmax)
        n = state.n
        if k_max == 0 or n == 0:
            return np.zeros(n, dtype=np.int32)
        gain = marginal_gains(state, k_max, p.prior_alpha)
        ok = gain >= max(p.min_gain, 1e-12)
        k = ok.sum(axis=1).astype(np.int32)  # what each request is worth drafting, unbounded budget
        if p.tokens_per_iter < 0:
            return k
        budget = np.maximum(p.tokens_per_iter - state.batch_size, 0)
        demand = np.bincount(state.engine, weights=k, minlength=state.n_engines)
        over = demand > budget
        if not over.any():
            return k
        # Engines over budget: rank their worthwhile (request, j) cells by gain within the engine.
        rows = np.flatnonzero(over[state.engine])
        g = gain[rows]
        cell_ok = ok[rows].ravel()
        cell_row = np.repeat(rows, k_max)[cell_ok]
        cell_eng = state.engine[cell_row].astype(np.float64)
        # One sort: engine major, gain descending (gains lie in [0, 1], so engine*2 - gain orders both).
        order = np.argsort(cell_eng * 2.0 - g.ravel()[cell_ok], kind="stable")
        eng_sorted = state.engine[cell_row[order]]
        starts = np.searchsorted(eng_sorted, eng_sorted, side="left")
        rank = np.arange(order.size) - starts
        keep = rank < budget[eng_sorted]
        k[rows] = 0
        k += np.bincount(cell_row[order][keep], minlength=n).astype(np.int32)
        return k
