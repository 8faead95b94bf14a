"""Acceptance-feedback draft length: AIMD (RhymeRL) or an EMA of the acceptance rate."""

from __future__ import annotations

import dataclasses

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.policies._base import Policy, register_policy
from specroll.policies._state import PolicyState
from specroll.policies._tuner import tunable

_MODES = ("aimd", "ema")


@register_policy("adaptive")
class AdaptivePolicy(Policy):
    """Per-request draft length from the request's own recent acceptance.

    ``mode="aimd"`` (RhymeRL, "History Rhymes", arXiv 2508.18588, its speculative rollout's
    length controller): +1 after a fully accepted draft, halve after a rejection, ``k_init``
    before the first draft (or after a 0-length one). ``mode="ema"``: with the acceptance EMA r
    read as a per-token acceptance, the expected run of accepted tokens is r / (1 - r); draft
    that plus ``margin`` (``k_init`` before the first draft).

    A pure function of ``last_drafted``, ``last_accepted`` and ``accept_ema``: no memory here,
    so the same decision results in the simulator and in the real backend. ``last_drafted`` is
    the draft actually used (clipped to the proposal), so growth follows what was verified.
    """

    @dataclasses.dataclass
    class Params:
        mode: str = dataclasses.field(default="aimd", metadata=tunable(choices=_MODES))
        k_init: int = dataclasses.field(default=4, metadata=tunable(1, 16, draft=True))
        k_min: int = 1
        k_max: int = dataclasses.field(default=16, metadata=tunable(2, 32, draft=True))
        margin: float = dataclasses.field(default=1.0, metadata=tunable(0.0, 4.0))

    def validate(self) -> None:
        p = self.params
        if p.mode not in _MODES:
            raise SpecrollError(f"unknown mode '{p.mode}'", field="mode",
                                fix=f"use one of {', '.join(_MODES)}")
        if not 0 <= p.k_min <= p.k_max or p.k_init < 0:
            raise SpecrollError(f"need 0 <= k_min <= k_max and k_init >= 0, got {p.k_min}, {p.k_max}, "
                                f"{p.k_init}", field="k_min")

    def decide(self, state: PolicyState) -> np.ndarray:
        p = self.params
        k_max = min(int(p.k_max), state.kmax)
        drafted = state.last_drafted.astype(np.int64)
        if p.mode == "aimd":
            k = np.where(state.last_accepted >= drafted, drafted + 1, drafted // 2)
        else:
            r = np.clip(state.accept_ema, 0.0, 1.0 - 1e-6)
            k = np.ceil(r / (1.0 - r) + p.margin - 1e-9)
            drafted = np.where(np.isnan(r), 0, 1)
        k = np.where(drafted > 0, np.nan_to_num(k, nan=0.0), p.k_init)
        return np.clip(k, min(int(p.k_min), k_max), k_max).astype(np.int32)
