"""The SPEC-RL drafter: the previous RL step's rollout of the same (prompt, sample).

SPEC-RL (Liu et al., arXiv 2509.23232) caches each rollout and, at the next epoch, feeds the cached
response of the same prompt as a draft that the current policy verifies in one pass; generation
resumes at the first rejected position. Here the drafter proposes, at response position t, the
tokens t, t+1, ... of the most recent visible rollout of the same (prompt, sample) (steps s - window
.. s - 1), at most ``kmax`` per iteration: one long draft re-proposed from wherever the request
stands, so after a rejection the rest of the old response is still proposed at the same positions
(SPEC-RL stops reusing after the first rejection; a later re-alignment can only help, and ``kmax``
= the cap reproduces "verify the whole cached response at once").

It needs the sample index, which the basic drafter calls do not carry: ``uses_sample = True`` makes
the engine, the rollout loop and ``compute_match_lengths`` pass ``sample=`` to ``begin`` and
``add_rollout`` (docs/systems/drafters.md). Deterministic: a proposal depends on the visible history
and the request's position only.

Probabilities (SPEC-RL has none for a cached token under our exact-match verification): ``probs[j]``
= the fraction of the prompt's rollouts in that same earlier step (all samples) that are long
enough and have the proposed token at that response position: how consistent the prompt's samples
were there, > 0 since the reference itself counts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.policies._drafters import Drafter, as_token_list, register_drafter

_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_F = np.zeros(0, dtype=np.float32)


@dataclasses.dataclass
class _Req:
    ref: np.ndarray            # the reference response (int64), empty when there is none
    agree: np.ndarray          # float32 per position of ref: fraction of the step's samples agreeing
    generated: int = 0


@register_drafter("prevrollout")
class PrevRolloutDrafter(Drafter):
    """Drafts the previous step's rollout of the same (prompt, sample) from the same position.

    Defaults: ``kmax`` 32 (one long draft per verification; ours, SPEC-RL verifies the whole cached
    response), ``window`` 1 (the previous step, as SPEC-RL's previous epoch)."""

    @dataclasses.dataclass
    class Params:
        kmax: int = 32
        window: int = 1

    uses_sample = True

    def validate(self) -> None:
        w = self.params.window
        if isinstance(w, bool) or not isinstance(w, int | np.integer) or w < 1:
            raise SpecrollError(f"window must be an integer >= 1, got {w!r}", field="window")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.window = int(self.params.window)
        self._step: int | None = None
        # (step, prompt_id) -> {sample: response}
        self._hist: dict[tuple[int, int], dict[int, np.ndarray]] = {}
        self._agree: dict[tuple[int, int], dict[int, np.ndarray]] = {}

    def start_step(self, step: int) -> None:
        self._step = int(step)
        oldest = self._step - self.window
        for key in [k for k in self._hist if k[0] < oldest]:
            del self._hist[key]
            self._agree.pop(key, None)

    def add_rollout(self, step: int, prompt_id: int, prompt_tokens: Any, response_tokens: Any,
                    sample: int = 0) -> None:
        key = (int(step), int(prompt_id))
        self._hist.setdefault(key, {})[int(sample)] = np.asarray(
            as_token_list(response_tokens, "response_tokens"), dtype=np.int64)
        self._agree.pop(key, None)

    def _reference(self, prompt_id: int, sample: int) -> tuple[np.ndarray, np.ndarray]:
        s = self._step
        steps = sorted((k[0] for k in self._hist if k[1] == prompt_id
                        and (s is None or s - self.window <= k[0] < s)), reverse=True)
        for st in steps:
            key = (st, prompt_id)
            if sample in self._hist[key]:
                return self._hist[key][sample], self._agreement(key)[sample]
        return _EMPTY_I, _EMPTY_F

    def _agreement(self, key: tuple[int, int]) -> dict[int, np.ndarray]:
        got = self._agree.get(key)
        if got is None:
            rolls = self._hist[key]
            width = max(len(r) for r in rolls.values())
            mat = np.full((len(rolls), width), -1, dtype=np.int64)
            for i, r in enumerate(rolls.values()):
                mat[i, :len(r)] = r
            have = (mat >= 0).sum(axis=0)
            got = {}
            for smp, r in rolls.items():
                same = (mat[:, :len(r)] == r[None, :]).sum(axis=0)
                got[smp] = (same / have[:len(r)]).astype(np.float32)
            self._agree[key] = got
        return got

    def begin(self, rid: int, prompt_id: int, prompt_tokens: Any, sample: int = 0) -> None:
        rid = self._new(rid)
        as_token_list(prompt_tokens, "prompt_tokens")
        ref, agree = self._reference(int(prompt_id), int(sample))
        self._req[rid] = _Req(ref, agree)

    def extend(self, rid: int, tokens: Any) -> None:
        self._get(rid).generated += len(as_token_list(tokens))

    def propose(self, rid: int) -> tuple[np.ndarray, np.ndarray]:
        r = self._get(rid)
        t = r.generated
        return r.ref[t:t + self.kmax], r.agree[t:t + self.kmax]
