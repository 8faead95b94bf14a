"""The n-gram drafter: prompt-lookup decoding over the request's own prompt and output.

As transformers' ``PromptLookupCandidateGenerator`` (``generate(prompt_lookup_num_tokens=...)``,
transformers 4.x/5.x): for n from ``max_ngram`` down to ``min_ngram``, take the last n tokens of
the text (prompt + output so far); if they occurred earlier, propose the tokens that followed
their *earliest* occurrence, up to kmax and never past the end of the text; else try n - 1.
No history: ``start_step`` / ``add_rollout`` do nothing.

Probabilities (prompt lookup has none; ours): over the earlier occurrences of the matched n-gram,
``probs[j]`` = the fraction of those agreeing with the proposal on tokens 0..j-1 (and long enough
to have a token j) whose token j is the proposed one. Their running product is the fraction of
occurrences continued by the whole proposal prefix: the same "conditional, chained" meaning as
the suffix drafter's counts, and always > 0 (the earliest occurrence agrees with itself).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.policies._drafters import Drafter, as_token_list, register_drafter
from specroll.policies._sam import _EMPTY_F, _EMPTY_I


class _Text:
    __slots__ = ("tokens", "index")

    def __init__(self, n_sizes: range) -> None:
        self.tokens: list[int] = []
        # n -> {n-gram: end positions (index of its last token), ascending}
        self.index: dict[int, dict[tuple[int, ...], list[int]]] = {n: {} for n in n_sizes}


@register_drafter("ngram")
class NgramDrafter(Drafter):
    """Prompt lookup. Defaults are transformers': ``max_matching_ngram_size`` 2 (down to 1) and
    ``num_output_tokens`` 10 as kmax."""

    @dataclasses.dataclass
    class Params:
        kmax: int = 10
        max_ngram: int = 2
        min_ngram: int = 1

    def validate(self) -> None:
        p = self.params
        for name in ("max_ngram", "min_ngram"):
            v = getattr(p, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise SpecrollError(f"{name} must be an integer >= 1, got {v!r}", field=name)
        if p.min_ngram > p.max_ngram:
            raise SpecrollError(f"min_ngram {p.min_ngram} > max_ngram {p.max_ngram}", field="min_ngram",
                                fix="use 1 <= min_ngram <= max_ngram")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        self._sizes = range(int(p.min_ngram), int(p.max_ngram) + 1)

    def begin(self, rid: int, prompt_id: int, prompt_tokens: Any) -> None:
        rid = self._new(rid)
        self._req[rid] = _Text(self._sizes)
        self._append(self._req[rid], as_token_list(prompt_tokens, "prompt_tokens"))

    def _append(self, text: _Text, toks: list[int]) -> None:
        tokens = text.tokens
        for c in toks:
            tokens.append(c)
            i = len(tokens) - 1
            for n, idx in text.index.items():
                if i + 1 >= n:
                    idx.setdefault(tuple(tokens[i + 1 - n:]), []).append(i)

    def extend(self, rid: int, tokens: Any) -> None:
        self._append(self._get(rid), as_token_list(tokens))

    def propose(self, rid: int) -> tuple[np.ndarray, np.ndarray]:
        text = self._get(rid)
        tokens = text.tokens
        size = len(tokens)
        for n in reversed(self._sizes):
            if n >= size:  # transformers: n-grams shorter than the text only
                continue
            ends = text.index[n].get(tuple(tokens[size - n:]))
            if ends is None or len(ends) < 2:  # the last end is the text's own end
                continue
            earlier = ends[:-1]
            first = earlier[0]
            prop = tokens[first + 1:first + 1 + self.kmax]
            return np.array(prop, dtype=np.int64), _chained_fractions(tokens, earlier, prop)
        return _EMPTY_I, _EMPTY_F


def _chained_fractions(tokens: list[int], ends: list[int], prop: list[int]) -> np.ndarray:
    """probs[j]: among occurrences (ending at ``ends``) that agree with ``prop[:j]`` and have a
    token j, the fraction whose token j is ``prop[j]``."""
    size = len(tokens)
    alive = ends
    probs = np.empty(len(prop), dtype=np.float32)
    for j, want in enumerate(prop):
        room = [e for e in alive if e + 1 + j < size]
        agree = [e for e in room if tokens[e + 1 + j] == want]
        probs[j] = len(agree) / len(room)
        alive = agree
    return probs
