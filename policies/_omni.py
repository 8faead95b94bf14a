"""The OmniDraft-style drafter: an online n-gram cache over ALL earlier rollouts (every prompt).

OmniDraft (Ramakrishnan et al., arXiv 2507.02659) pairs one small draft model with any target
through an *online n-gram cache* that grows with what the target generated, plus online
distillation and adaptive drafting. Here the cache itself is the drafter (no draft model, one
vocabulary): next-token counts of every n-gram (sizes ``min_ngram`` .. ``max_ngram``) in

- history: the responses of every rollout, of every prompt, from RL steps s - window .. s - 1
  (``add_rollout``; the same window convention as the suffix drafter), each preceded by the last
  ``max_ngram`` tokens of its prompt as left context; an occurrence counts when the token it
  predicts is a response token (the chat template's tail then predicts how responses start);
- own text: the request's prompt and output so far, every occurrence counted.

Proposal: the longest context (the last n tokens, n = max_ngram down to min_ngram) with any
counted continuation; the most frequent next token (ties: the smallest id) with probability
count / total; then continue from the text plus that token (backing off again), while the path
probability stays >= ``min_prob``, at most kmax tokens. A pure function of the counts, which are
a pure function of the content: deterministic in the sense of policies/_drafters.py.

OmniDraft's *adaptive drafting* (a learned stop head) is the ``adaptive`` policy family here: pair
``drafter = "omni"`` with ``policy = "adaptive"`` (docs/systems/drafters.md).

The count tables (:class:`NgramCounts`, :class:`NgramHistory`) are shared with ``stand``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.core.params import check_number
from specroll.policies._drafters import Drafter, as_token_list, register_drafter

_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_F = np.zeros(0, dtype=np.float32)


class NgramCounts:
    """context tuple -> {next token: count}, with totals per context."""

    __slots__ = ("nxt", "tot")

    def __init__(self) -> None:
        self.nxt: dict[tuple[int, ...], dict[int, int]] = {}
        self.tot: dict[tuple[int, ...], int] = {}

    def add(self, ctx: tuple[int, ...], tok: int, n: int = 1) -> None:
        d = self.nxt.get(ctx)
        if d is None:
            d = self.nxt[ctx] = {}
        c = d.get(tok, 0) + n
        if c:
            d[tok] = c
        else:
            del d[tok]
        t = self.tot.get(ctx, 0) + n
        if t:
            self.tot[ctx] = t
        else:
            del self.tot[ctx]
            del self.nxt[ctx]

    def add_sequence(self, seq: list[int], first: int, sizes: range) -> None:
        """Count every n-gram of ``seq`` whose next token sits at index >= ``first``."""
        for i in range(max(first, 1), len(seq)):
            tok = seq[i]
            for n in sizes:
                if i >= n:
                    self.add(tuple(seq[i - n:i]), tok)

    def merge(self, other: NgramCounts, sign: int) -> None:
        for ctx, d in other.nxt.items():
            for tok, c in d.items():
                self.add(ctx, tok, sign * c)


class NgramHistory:
    """Per-bucket (one bucket for all prompts, or one per prompt) counts of the rollouts visible at
    the current step: steps ``step - window .. step - 1``; before any ``start_step``, everything."""

    def __init__(self, sizes: range, window: int, left: int) -> None:
        self.sizes, self.window, self.left = sizes, int(window), int(left)
        self.step: int | None = None
        self._tables: dict[tuple[int, int], NgramCounts] = {}   # (bucket, step) -> counts
        self._visible: dict[int, NgramCounts] = {}
        self._in: set[tuple[int, int]] = set()
        self._sorted: dict[tuple[int, tuple[int, ...]], list[int]] = {}

    def _wanted(self, key: tuple[int, int]) -> bool:
        s = self.step
        return s is None or s - self.window <= key[1] < s

    def start_step(self, step: int) -> None:
        self.step = int(step)
        for key in sorted(set(self._tables) | self._in):
            want = self._wanted(key) and key in self._tables
            if want and key not in self._in:
                self._visible.setdefault(key[0], NgramCounts()).merge(self._tables[key], +1)
                self._in.add(key)
            elif not want and key in self._in:
                self._visible[key[0]].merge(self._tables[key], -1)
                self._in.discard(key)
        oldest = self.step - self.window
        for key in [k for k in self._tables if k[1] < oldest]:  # never visible again
            del self._tables[key]
        self._sorted.clear()

    def add(self, bucket: int, step: int, prompt: list[int], response: list[int]) -> None:
        left = prompt[-self.left:] if self.left else []
        one = NgramCounts()
        one.add_sequence(left + response, len(left), self.sizes)
        key = (int(bucket), int(step))
        self._tables.setdefault(key, NgramCounts()).merge(one, +1)
        if self._wanted(key):  # already visible (or no step yet): it joins the visible counts now
            self._visible.setdefault(key[0], NgramCounts()).merge(one, +1)
            self._in.add(key)
            self._sorted = {k: v for k, v in self._sorted.items() if k[0] != key[0]}

    def counts(self, bucket: int) -> NgramCounts | None:
        return self._visible.get(int(bucket))

    def ranked(self, bucket: int, ctx: tuple[int, ...]) -> list[int]:
        """The history's continuations of ``ctx``, most frequent first (ties: smallest id); cached
        until the visible history changes."""
        key = (bucket, ctx)
        got = self._sorted.get(key)
        if got is None:
            h = self._visible.get(bucket)
            d = h.nxt.get(ctx, {}) if h is not None else {}
            got = self._sorted[key] = sorted(d, key=lambda t: (-d[t], t))
        return got


class NgramText:
    """A request's own text (prompt + output) and the counts of all its n-grams."""

    __slots__ = ("bucket", "tokens", "counts", "sizes")

    def __init__(self, bucket: int, sizes: range) -> None:
        self.bucket, self.sizes = bucket, sizes
        self.tokens: list[int] = []
        self.counts = NgramCounts()

    def extend(self, toks: list[int]) -> None:
        tokens, sizes, add = self.tokens, self.sizes, self.counts.add
        for tok in toks:
            i = len(tokens)
            for n in sizes:
                if i >= n:
                    add(tuple(tokens[i - n:i]), tok)
            tokens.append(tok)


def top_next(hist: NgramHistory, text: NgramText, ctx_tokens: list[int], w: int
             ) -> tuple[list[tuple[int, int]], int]:
    """The ``w`` most frequent continuations [(token, count)] of the longest suffix of
    ``ctx_tokens`` with any (history + own) continuation, and their context's total count."""
    h = hist.counts(text.bucket)
    own = text.counts
    for n in reversed(text.sizes):
        if n > len(ctx_tokens):
            continue
        ctx = tuple(ctx_tokens[-n:])
        total = own.tot.get(ctx, 0) + (h.tot.get(ctx, 0) if h is not None else 0)
        if total <= 0:
            continue
        o = own.nxt.get(ctx, {})
        hd = h.nxt.get(ctx, {}) if h is not None else {}
        cand = {t: c + hd.get(t, 0) for t, c in o.items()}
        # A token the own text never saw has its history count alone: the first w of those, in
        # the history's order, are the only ones that can make the merged top w.
        extra = 0
        for t in (hist.ranked(text.bucket, ctx) if hd else ()):
            if extra >= w:
                break
            if t not in o:
                cand[t] = hd[t]
                extra += 1
        best = sorted(cand.items(), key=lambda tc: (-tc[1], tc[0]))[:w]
        return best, total
    return [], 0


def greedy_branch(hist: NgramHistory, text: NgramText, first: tuple[int, int] | None, total: int,
                  kmax: int, min_prob: float) -> tuple[list[int], list[float]]:
    """A branch: ``first`` (token, count of ``total``; None = the most frequent), then the most
    frequent continuation of the text so far, while the path probability stays >= min_prob."""
    toks: list[int] = []
    probs: list[float] = []
    width = max(text.sizes)
    ctx = list(text.tokens[-width:])
    prob = 1.0
    while len(toks) < kmax:
        if first is not None and not toks:
            (tok, cnt), tot = first, total
        else:
            best, tot = top_next(hist, text, ctx, 1)
            if not best:
                break
            tok, cnt = best[0]
        p = cnt / tot
        prob *= p
        if prob < min_prob:
            break
        toks.append(tok)
        probs.append(p)
        ctx.append(tok)
        if len(ctx) > width:
            del ctx[0]
    return toks, probs


@register_drafter("omni")
class OmniDrafter(Drafter):
    """Online n-gram cache over every prompt's recent rollouts plus the request's own text.

    Defaults (ours): contexts of 1..4 tokens (``max_ngram`` 4: long enough to be specific across
    prompts, short enough to recur); ``window`` 4 RL steps and ``min_prob`` 0.1 as the suffix
    drafter's; ``kmax`` 8, the project's default proposal length."""

    @dataclasses.dataclass
    class Params:
        kmax: int = 8
        max_ngram: int = 4
        min_ngram: int = 1
        window: int = 4
        min_prob: float = 0.1

    # per prompt (stand) or one bucket for all prompts (omni)
    per_prompt = False

    def validate(self) -> None:
        check_ngram_params(self.params)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        self.sizes = range(int(p.min_ngram), int(p.max_ngram) + 1)
        self.min_prob = float(p.min_prob)
        self.history = NgramHistory(self.sizes, int(p.window), left=int(p.max_ngram))

    def start_step(self, step: int) -> None:
        self.history.start_step(step)

    def add_rollout(self, step: int, prompt_id: int, prompt_tokens: Any, response_tokens: Any) -> None:
        self.history.add(self._bucket(prompt_id), step, as_token_list(prompt_tokens, "prompt_tokens"),
                         as_token_list(response_tokens, "response_tokens"))

    def _bucket(self, prompt_id: int) -> int:
        return int(prompt_id) if self.per_prompt else 0

    def begin(self, rid: int, prompt_id: int, prompt_tokens: Any) -> None:
        rid = self._new(rid)
        text = NgramText(self._bucket(prompt_id), self.sizes)
        text.extend(as_token_list(prompt_tokens, "prompt_tokens"))
        self._req[rid] = text

    def extend(self, rid: int, tokens: Any) -> None:
        self._get(rid).extend(as_token_list(tokens))

    def propose(self, rid: int) -> tuple[np.ndarray, np.ndarray]:
        toks, probs = greedy_branch(self.history, self._get(rid), None, 0, self.kmax, self.min_prob)
        if not toks:
            return _EMPTY_I, _EMPTY_F
        return np.array(toks, dtype=np.int64), np.array(probs, dtype=np.float32)


def check_ngram_params(p: Any) -> None:
    for name in ("max_ngram", "min_ngram", "window"):
        check_number(getattr(p, name), name, integer=True, lo=1)
    if p.min_ngram > p.max_ngram:
        raise SpecrollError(f"min_ngram {p.min_ngram} > max_ngram {p.max_ngram}", field="min_ngram",
                            fix="use 1 <= min_ngram <= max_ngram")
    check_number(p.min_prob, "min_prob", lo=0, hi=1)
