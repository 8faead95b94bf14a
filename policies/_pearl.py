"""PEARL's adaptive draft length, as a policy family ``pearl``.

PEARL (Liu et al., ICLR 2025, arXiv 2408.11850) runs the draft model and the target on separate
devices and overlaps them: *pre-verify* checks the first draft token while the rest is drafted,
*post-verify* keeps drafting while the target verifies. Drafting never waits for verification, so
the draft a request gets is what the drafter produces in the time of one verification: PEARL sets
its window gamma to the ratio of the target's step time to the draft model's, and the draft
adapts to the speed of the two models.

Here the two times come from a cost profile at the engine's batch size: gamma(b) is the largest k
<= k_max whose drafting, k sequential draft-model decodes over the batch, fits within ``margin`` x
the target's verification of k drafts (at least 1). Verification grows with the batch (it turns
compute-bound) while a small draft model's step barely does, so gamma grows with the batch: more
draft tokens fit in a longer verification. The cost profile of the simulation prices the iteration
as max(draft, verify) when its drafter has ``overlap = true`` (calibration/_costmodel.py).

Approximated: post-verify's continuation (a fully accepted window goes on with the tokens drafted
meanwhile, without a new verification round) is not modelled: each iteration verifies one window.
Context enters at one length, ``ctx_len`` (like the ``mdp`` family). Stateless and batch-only, so
the simulator's windowed fast path runs it (``decide_with_horizon``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from specroll.calibration import IterationBatch
from specroll.core.errors import SpecrollError
from specroll.core.shapes import MODEL_SHAPES
from specroll.policies._base import Policy, register_policy
from specroll.policies._mdp import profile_key, unbound
from specroll.policies._state import PolicyState
from specroll.policies._tuner import tunable

_TABLES: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def pearl_window(verify_s: np.ndarray, draft_step_s: np.ndarray, k_max: int, margin: float = 1.0
                 ) -> np.ndarray:
    """int (B,): the largest k in [1, k_max] with k * draft_step_s[b] <= margin * verify_s[b, k]
    (``verify_s`` (B, k_max + 1): the target's iteration time verifying k drafts), or 1."""
    k = np.arange(k_max + 1)[None, :]
    fits = (k * draft_step_s[:, None] <= margin * verify_s) & (k >= 1)
    best = np.where(fits, k, 0).max(axis=1)
    return np.maximum(best, 1).astype(np.int64)


@register_policy("pearl")
class PearlPolicy(Policy):
    """Draft as many tokens as the draft model produces during one verification (module docstring)."""

    needs_cost = True

    @dataclasses.dataclass
    class Params:
        draft_model: str = "qwen2.5-0.5b"
        ctx_len: int = dataclasses.field(default=2048, metadata=tunable(256, 16384, log=True))
        k_max: int = 16
        max_batch: int = 256
        margin: float = dataclasses.field(default=1.0, metadata=tunable(0.5, 3.0))

    def __init__(self, **params: Any) -> None:
        self.gamma: np.ndarray | None = None
        super().__init__(**params)

    def bind_cost(self, profile: Any) -> None:
        self._build(profile)

    def validate(self) -> None:
        p = self.params
        MODEL_SHAPES.get(p.draft_model, field="draft_model")
        if int(p.k_max) < 1 or int(p.max_batch) < 1 or int(p.ctx_len) < 0 or float(p.margin) <= 0:
            raise SpecrollError("need k_max >= 1, max_batch >= 1, ctx_len >= 0, margin > 0", field="k_max")

    def _build(self, base: Any) -> None:
        p = self.params
        pk = profile_key(base)
        key = (pk, p.draft_model, int(p.ctx_len), int(p.k_max), int(p.max_batch), float(p.margin))
        if pk is None or key not in _TABLES:
            try:
                verify_prof = base.with_drafter({"kind": "none"}, field="profile")
                draft_prof = base.with_drafter({"kind": "model", "model": p.draft_model}, field="draft_model")
            except SpecrollError as exc:
                where = "draft_model" if str(exc.field).startswith("draft_model") else "profile"
                raise SpecrollError(exc.what, field=where, fix=exc.fix) from None
            B, K, c = int(p.max_batch), int(p.k_max), float(p.ctx_len)
            b = np.repeat(np.arange(1, B + 1, dtype=np.float64), K + 1)
            k = np.tile(np.arange(K + 1, dtype=np.float64), B)
            q = k + 1.0
            batch = IterationBatch(n=b, q_sum=b * q, q_max=q, c_sum=b * c, c_max=np.full_like(b, c),
                                   qc_sum=b * q * (c + (q + 1.0) / 2.0), draft_tokens=b * k)
            verify = verify_prof.iteration_time(batch).reshape(B, K + 1)
            one = draft_prof.iteration_time(batch).reshape(B, K + 1)[:, 1] - verify[:, 1]  # one draft step
            gamma = pearl_window(verify, one, K, float(p.margin))
            # floor[b]: the smallest batch size from which gamma stays gamma[b] up to b
            change = np.concatenate([[True], gamma[1:] != gamma[:-1]])
            floor = np.maximum.accumulate(np.where(change, np.arange(1, B + 1), 0))
            self.gamma, self.floor = gamma, floor
            if pk is not None:
                _TABLES[key] = (gamma, floor)
            return
        self.gamma, self.floor = _TABLES[key]

    def _batch_index(self, state: PolicyState) -> np.ndarray:
        return np.clip(np.asarray(state.batch_size, np.int64), 1, self.gamma.shape[0]) - 1

    def decide(self, state: PolicyState) -> np.ndarray:
        if self.gamma is None:
            raise unbound(self.name)
        g = self.gamma[self._batch_index(state)]
        return np.minimum(g[state.engine], state.kmax).astype(np.int32)

    def decide_with_horizon(self, state: PolicyState) -> tuple[np.ndarray, None, np.ndarray]:
        # gamma depends on the batch size only: it holds while the batch stays >= floor.
        return self.decide(state), None, self.floor[self._batch_index(state)]
