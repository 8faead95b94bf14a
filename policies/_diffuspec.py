"""DiffuSpec's adaptive draft-length (ADL) controller, as a policy family ``diffuspec``.

DiffuSpec (Li et al., arXiv 2510.02358) drafts with a diffusion language model: one forward fills a
whole block of masked positions, so a draft costs about the same whatever its length (drafter kind
``parallel`` in the cost profile), but the length must be fixed before drafting. Its ADL controller
"adjusts the next proposal size based on recent acceptance feedback and realized generated length".
Our reading of it, per request:

    A <- (1 - beta) A + beta a          EMA of the accepted tokens a of each verified draft
    L <- ceil(A + delta)                draft a little beyond what recent drafts got accepted
    if the whole draft was accepted:    the length was the limit, not the drafter: grow
        L <- max(L, k + grow)
    L <- clip(L, k_min, k_max)          and k_init before a request's first verified draft

where k is the draft actually verified (the proposal clipped to what the drafter produced: the
"realized" length). A draft that dies early pulls A down fast (beta), a fully accepted one pushes L
up at once. Because a parallel drafter's cost is flat in L, the controller only trades verification
work (and the wasted tail of a rejected draft) against accepted tokens.

Stateful (per-request EMAs, vectorized over requests and engines, keyed by ``PolicyState.request``);
``reset`` clears them at each RL step. No ``decide_with_horizon``: its decisions follow feedback, so
the simulator runs it on the iteration loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.policies._base import Policy, register_policy
from specroll.policies._state import Feedback, PolicyState
from specroll.policies._tuner import tunable


@register_policy("diffuspec")
class DiffuSpecPolicy(Policy):
    """Per-request draft length from the EMA of accepted tokens (DiffuSpec's ADL; module docstring)."""

    @dataclasses.dataclass
    class Params:
        k_init: int = dataclasses.field(default=6, metadata=tunable(1, 16, draft=True))
        k_min: int = 1
        k_max: int = dataclasses.field(default=16, metadata=tunable(2, 32, draft=True))
        beta: float = dataclasses.field(default=0.5, metadata=tunable(0.05, 1.0))
        delta: float = dataclasses.field(default=1.0, metadata=tunable(0.0, 4.0))
        grow: int = dataclasses.field(default=2, metadata=tunable(0, 8))

    def validate(self) -> None:
        p = self.params
        for name in ("k_init", "k_min", "k_max", "grow"):
            v = getattr(p, name)
            if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 0:
                raise SpecrollError(f"{name} must be an integer >= 0, got {v!r}", field=name)
        if not p.k_min <= p.k_max:
            raise SpecrollError(f"need k_min <= k_max, got {p.k_min}, {p.k_max}", field="k_min")
        if not 0.0 < float(p.beta) <= 1.0 or float(p.delta) < 0.0:
            raise SpecrollError(f"need 0 < beta <= 1 and delta >= 0, got {p.beta}, {p.delta}", field="beta")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.reset(0)

    def reset(self, n_engines: int) -> None:
        # Per request id: EMA of accepted tokens (nan before a verified draft), last verified draft
        # and whether it was accepted in full. Grown on demand (ids are dense per run).
        self._ema = np.full(0, np.nan)
        self._last_k = np.zeros(0, np.int64)
        self._full = np.zeros(0, bool)

    def _grow_to(self, top: int) -> None:
        n = self._ema.shape[0]
        if top < n:
            return
        size = max(top + 1, 2 * n, 1024)
        self._ema = np.concatenate([self._ema, np.full(size - n, np.nan)])
        self._last_k = np.concatenate([self._last_k, np.zeros(size - n, np.int64)])
        self._full = np.concatenate([self._full, np.zeros(size - n, bool)])

    def decide(self, state: PolicyState) -> np.ndarray:
        p = self.params
        ids = np.asarray(state.request, np.int64)
        if ids.size:
            self._grow_to(int(ids.max()))
        ema = self._ema[ids]
        k = np.ceil(np.nan_to_num(ema, nan=0.0) + float(p.delta) - 1e-9).astype(np.int64)
        k = np.where(self._full[ids], np.maximum(k, self._last_k[ids] + int(p.grow)), k)
        k = np.where(np.isnan(ema), int(p.k_init), k)
        hi = min(int(p.k_max), state.kmax)
        return np.clip(k, min(int(p.k_min), hi), hi).astype(np.int32)

    def observe(self, state: PolicyState, feedback: Feedback) -> None:
        ids = np.asarray(state.request, np.int64)
        if not ids.size:
            return
        self._grow_to(int(ids.max()))
        k = np.asarray(feedback.k, np.int64)
        a = np.asarray(feedback.accepted, np.int64)
        drafted = k > 0  # iterations that verified nothing leave the controller as it was
        i, k, a = ids[drafted], k[drafted], a[drafted]
        beta = float(self.params.beta)
        old = self._ema[i]
        self._ema[i] = np.where(np.isnan(old), a, (1.0 - beta) * old + beta * a)
        self._last_k[i] = k
        self._full[i] = a >= k
