"""The oracle: drafts exactly the match length (a lower bound on makespan, not deployable)."""

from __future__ import annotations

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.policies._base import Policy, register_policy
from specroll.policies._state import PolicyState


@register_policy("oracle")
class OraclePolicy(Policy):
    """Drafts exactly m_t (docs/design.md §1): every drafted token is accepted and none is wasted.

    With match-length replay no policy accepts more tokens per iteration at a smaller draft, so
    its makespan bounds the others (for a cost that grows with draft tokens). It reads
    ``state.match_len``, which only the simulator fills: it cannot run on a real backend.
    """

    deployable = False

    def decide(self, state: PolicyState) -> np.ndarray:
        if state.match_len is None:
            raise SpecrollError("policy 'oracle' needs the true match lengths, which only the simulator "
                                "knows (state.match_len is None)", field="policy",
                                fix="use the oracle in `specroll simulate` only; pick a deployable policy "
                                    "for the real backend")
        return np.clip(state.match_len, 0, state.kmax).astype(np.int32)
