"""SpecDec++ threshold policy: stop drafting once a rejection becomes too likely."""

from __future__ import annotations

import dataclasses

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.policies._alloc import confident_prefix, has_confidence
from specroll.policies._base import Policy, register_policy
from specroll.policies._state import PolicyState
from specroll.policies._tuner import tunable

_FALLBACKS = ("ema", "kmax")


def geometric_k(alpha: np.ndarray, h: float, k_max: int) -> np.ndarray:
    """int: largest k with 1 - alpha**k <= h (per-token acceptance ``alpha``), capped at k_max."""
    a = np.clip(np.asarray(alpha, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.floor(np.log1p(-h) / np.log(a) + 1e-9)
    k = np.where(a >= 1.0, k_max, np.where(a <= 0.0, 0, k))
    return np.clip(np.nan_to_num(k, nan=0.0), 0, k_max).astype(np.int32)


@register_policy("threshold")
class ThresholdPolicy(Policy):
    """SpecDec++ (Huang, Guo, Wang; arXiv 2405.19715, §4 "Theory and Algorithm").

    SpecDec++ shows the optimal stopping rule of the candidate-length MDP is a threshold rule:
    keep drafting while the predicted probability that at least one drafted token is rejected,
    ``1 - prod_{j<k} p_j``, stays <= ``h``. The suffix drafter's path probabilities stand in for
    SpecDec++'s trained acceptance head. The result is bounded to [k_min, k_max].

    Without a confidence signal (``draft_conf`` NaN, e.g. parametric acceptance) the rule is
    applied to a geometric model: ``fallback="ema"`` uses the request's acceptance EMA (or
    ``prior_alpha`` before its first draft) as the per-token acceptance p, giving
    k = floor(log(1-h) / log p); ``fallback="kmax"`` drafts k_max.
    Defaults: h = 0.7 is the middle of the thresholds SpecDec++ sweeps; k_min/k_max are ours.
    """

    uses_confidence = True

    @dataclasses.dataclass
    class Params:
        # Up to 0.99: in a memory-bound tail a draft at path probability 0.6^8 ~ 0.017 still pays.
        h: float = dataclasses.field(default=0.7, metadata=tunable(0.05, 0.99))
        k_min: int = dataclasses.field(default=1, metadata=tunable(0, 4, draft=True))
        k_max: int = dataclasses.field(default=16, metadata=tunable(2, 32, draft=True))
        fallback: str = "ema"
        prior_alpha: float = 0.7

    def validate(self) -> None:
        p = self.params
        if not 0.0 <= p.h < 1.0:
            raise SpecrollError(f"h must be in [0, 1), got {p.h}", field="h")
        if not 0 <= p.k_min <= p.k_max:
            raise SpecrollError(f"need 0 <= k_min <= k_max, got {p.k_min}, {p.k_max}", field="k_min")
        if p.fallback not in _FALLBACKS:
            raise SpecrollError(f"unknown fallback '{p.fallback}'", field="fallback",
                                fix=f"use one of {', '.join(_FALLBACKS)}")
        if not 0.0 <= p.prior_alpha <= 1.0:
            raise SpecrollError(f"prior_alpha must be in [0, 1], got {p.prior_alpha}", field="prior_alpha")

    def decide(self, state: PolicyState) -> np.ndarray:
        p = self.params
        k_max = min(int(p.k_max), state.kmax)
        if has_confidence(state):
            conf = state.draft_conf
            # P(all of the first k accepted) = the path probability; stop once it falls below 1 - h.
            k = confident_prefix(conf, 1.0 - p.h, k_max)
            no_signal = np.isnan(conf[:, 0]) if k_max > 0 else np.zeros(state.n, bool)
        else:
            k = np.zeros(state.n, dtype=np.int32)
            no_signal = np.ones(state.n, dtype=bool)
        if no_signal.any():
            if p.fallback == "kmax":
                k[no_signal] = k_max
            else:
                ema = state.accept_ema[no_signal]
                k[no_signal] = geometric_k(np.where(np.isnan(ema), p.prior_alpha, ema), p.h, k_max)
        return np.clip(k, min(int(p.k_min), k_max), k_max)
