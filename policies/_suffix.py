"""The suffix drafter: SuffixDecoding / DAS-style drafting from recent rollouts of the same prompt.

Content (what a proposal may depend on), for a request of prompt P at RL step s:

- history: the rollouts of P from steps s - window .. s - 1 (``add_rollout``), each as its
  response with the last ``depth`` prompt tokens before it as left context; an occurrence counts
  when the token it predicts is a response token (so the prompt, identical in every rollout, is
  not counted ``window * samples`` times, yet the first response tokens are predicted from the
  end of the prompt). With ``siblings=True`` also rollouts of P in step s that ended (``end``)
  before this request began: timing-dependent, hence off by default.
- own text: the request's prompt and output so far, every occurrence counted.

Proposal: take the longest suffix s of the context (prompt + output, at most ``depth`` tokens)
that occurs in that content followed by a counted token; let L = |s|. Then repeatedly append
the most frequent next token (counts of history and own text added; ties to the smallest token
id) while the path probability, the product of the conditionals count(s+c)/count(s followed by
anything), stays >= ``min_prob``; at most min(kmax, floor(spec_factor * L + spec_offset))
tokens. ``probs`` are the per-token conditionals.

This is the trie of SuffixDecoding (arctic-inference) with two deliberate differences, documented
in docs/drafters.md: the longest match is used (arctic scores every match length and keeps the
best), and ``depth`` bounds only the matched context (arctic's tree depth bounds match + draft).
The index is a suffix automaton (policies/_sam.py) rather than a trie of depth nodes per token.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.policies._drafters import Drafter, as_token_list, register_drafter
from specroll.policies._sam import _EMPTY_F, _EMPTY_I, HistorySAM, LocalSAM

# Built history automata kept for prompts with no active request (rebuilt on demand: they are a
# pure function of the history, so dropping one never changes a proposal).
_CACHED_PROMPTS = 32


@dataclasses.dataclass
class _Entry:
    step: int
    left: list[int]
    response: list[int]
    sibling: bool = False


class _Request:
    __slots__ = ("prompt_id", "sam", "hv", "hl", "local", "prompt", "out")

    def __init__(self, prompt_id: int, sam: HistorySAM | None, local: LocalSAM, prompt: list[int],
                 keep_output: bool) -> None:
        self.prompt_id = prompt_id
        self.sam = sam
        self.hv = 0
        self.hl = 0
        self.local = local
        self.prompt = prompt
        self.out: list[int] | None = [] if keep_output else None


@register_drafter("suffix")
class SuffixDrafter(Drafter):
    """Suffix-automaton drafter over recent rollouts of the prompt and the request's own text.

    Defaults: ``depth`` 24 and ``min_prob`` 0.1 are vLLM's ``suffix_decoding_max_tree_depth`` and
    ``suffix_decoding_min_token_prob``, ``spec_factor`` 1.0 / ``spec_offset`` 0.0 are vLLM's
    ``suffix_decoding_max_spec_factor`` and arctic-inference's ``max_spec_offset``; ``window`` 4
    matches :class:`LengthHistory`'s; ``kmax`` 8 is the project's default proposal length.
    """

    @dataclasses.dataclass
    class Params:
        kmax: int = 8
        depth: int = 24
        min_prob: float = 0.1
        spec_factor: float = 1.0
        spec_offset: float = 0.0
        window: int = 4
        siblings: bool = False

    def validate(self) -> None:
        p = self.params
        for name, lo in (("depth", 1), ("window", 1)):
            v = getattr(p, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
                raise SpecrollError(f"{name} must be an integer >= {lo}, got {v!r}", field=name)
        for name in ("min_prob", "spec_factor", "spec_offset"):
            v = getattr(p, name)
            if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
                raise SpecrollError(f"{name} must be a number, got {v!r}", field=name)
        if not 0.0 <= float(p.min_prob) <= 1.0:
            raise SpecrollError(f"min_prob must be in [0, 1], got {p.min_prob}", field="min_prob")
        if float(p.spec_factor) < 0:
            raise SpecrollError(f"spec_factor must be >= 0, got {p.spec_factor}", field="spec_factor")
        if not isinstance(p.siblings, bool):
            raise SpecrollError(f"siblings must be true or false, got {p.siblings!r}", field="siblings")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        self.depth = int(p.depth)
        self.window = int(p.window)
        self.min_prob = float(p.min_prob)
        self.spec_factor = float(p.spec_factor)
        self.spec_offset = float(p.spec_offset)
        self._step: int | None = None
        self._hist: dict[int, list[_Entry]] = {}
        self._version: dict[int, int] = {}
        self._cache: OrderedDict[int, tuple[tuple[Any, int], HistorySAM | None]] = OrderedDict()

    # ---- history ------------------------------------------------------------------------------
    def start_step(self, step: int) -> None:
        """Step ``step`` begins: proposals now use history from steps ``step - window`` to
        ``step - 1``; older rollouts are dropped."""
        step = int(step)
        self._step = step
        oldest = step - self.window
        for pid in list(self._hist):
            kept = [e for e in self._hist[pid] if e.step >= oldest]
            if len(kept) != len(self._hist[pid]):
                self._bump(pid)
            if kept:
                self._hist[pid] = kept
            else:
                del self._hist[pid]
        self._cache.clear()
        # Build the prompts' indexes now, between steps (where DAS updates its tree), rather than
        # inside the first prefill of each prompt; only when they all fit in the cache. Either way
        # the proposals are the same: this moves cost, not results.
        if len(self._hist) <= _CACHED_PROMPTS:
            for pid in sorted(self._hist):
                self.history_index(pid)

    def add_rollout(self, step: int, prompt_id: int, prompt_tokens: Any, response_tokens: Any) -> None:
        pid, step = int(prompt_id), int(step)
        resp = as_token_list(response_tokens, "response_tokens")
        entries = self._hist.setdefault(pid, [])
        if self.params.siblings:  # the same rollout already entered as a sibling at its end()
            for e in entries:
                if e.sibling and e.step == step and e.response == resp:
                    e.sibling = False
                    return
        left = as_token_list(prompt_tokens, "prompt_tokens")[-self.depth:]
        entries.append(_Entry(step, left, resp))
        self._bump(pid)

    def _bump(self, pid: int) -> None:
        self._version[pid] = self._version.get(pid, 0) + 1

    def _visible(self, pid: int) -> list[_Entry]:
        s = self._step
        if s is None:  # no start_step yet: everything added so far
            return list(self._hist.get(pid, ()))
        return [e for e in self._hist.get(pid, ()) if s - self.window <= e.step < s
                or (e.sibling and e.step == s)]

    def history_index(self, prompt_id: int) -> HistorySAM | None:
        """The automaton of the prompt's visible history (None when there is none)."""
        pid = int(prompt_id)
        sig = (self._step, self._version.get(pid, 0))
        got = self._cache.get(pid)
        if got is not None and got[0] == sig:
            self._cache.move_to_end(pid)
            return got[1]
        entries = self._visible(pid)
        sam = (HistorySAM(((e.left, e.response) for e in entries), kmax=self.kmax, min_prob=self.min_prob)
               if entries else None)
        self._cache[pid] = (sig, sam)
        self._cache.move_to_end(pid)
        while len(self._cache) > _CACHED_PROMPTS:
            self._cache.popitem(last=False)
        return sam

    # ---- requests -----------------------------------------------------------------------------
    def begin(self, rid: int, prompt_id: int, prompt_tokens: Any) -> None:
        rid = self._new(rid)
        prompt = as_token_list(prompt_tokens, "prompt_tokens")
        local = LocalSAM(self.depth)
        local.extend(prompt)
        r = _Request(int(prompt_id), self.history_index(prompt_id), local, prompt, self.params.siblings)
        if r.sam is not None:
            r.hv, r.hl = r.sam.match(prompt, self.depth)
        self._req[rid] = r

    def extend(self, rid: int, tokens: Any) -> None:
        r = self._get(rid)
        toks = as_token_list(tokens)
        r.local.extend(toks)
        if r.out is not None:
            r.out.extend(toks)
        sam = r.sam
        if sam is not None:
            v, length, depth = r.hv, r.hl, self.depth
            for c in toks:
                v, length = sam.step(v, length, c, depth)
            r.hv, r.hl = v, length

    def end(self, rid: int) -> None:
        r = self._pop(rid)
        if r.out is not None and self._step is not None:
            self._hist.setdefault(r.prompt_id, []).append(
                _Entry(self._step, r.prompt[-self.depth:], r.out, sibling=True))
            self._bump(r.prompt_id)

    def propose(self, rid: int) -> tuple[np.ndarray, np.ndarray]:
        r = self._get(rid)
        sam, local = r.sam, r.local
        vh, lh = (sam.proposal_state(r.hv, r.hl) if sam is not None else (-1, 0))
        vl, ll = local.mv, local.ml
        length = lh if lh > ll else ll
        if length == 0:
            return _EMPTY_I, _EMPTY_F
        nmax = min(self.kmax, int(length * self.spec_factor + self.spec_offset + 1e-6))
        if nmax <= 0:
            return _EMPTY_I, _EMPTY_F
        if ll < length:  # only the history has a match this long: its cached greedy walk
            toks, probs, _, ncut = sam.path(vh)  # type: ignore[union-attr]
            n = ncut if ncut < nmax else nmax
            return toks[:n], probs[:n]
        # The own text matched: walk the merged counts. The history joins wherever the matched
        # suffix occurs in it at all (even where it predicts no counted token itself, what follows
        # it may: a prompt-tail occurrence continues into a response).
        if sam is not None and r.hl >= length:
            if lh != length:
                vh, link, lens = r.hv, sam.link, sam.length
                while lens[link[vh]] >= length:
                    vh = link[vh]
        else:
            vh = -1
        return self._walk(sam, vh, local, vl, nmax)

    def _walk(self, sam: HistorySAM | None, vh: int, local: LocalSAM, vl: int, nmax: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """Greedy walk over the merged counts of the own text (state vl) and, when it matched as
        long a suffix, the history (state vh; else sam is None)."""
        min_prob = self.min_prob
        lnxt, lcnt = local.nxt, local.cnt
        if sam is None:
            vh = -1
        toks: list[int] = []
        probs: list[float] = []
        prob = 1.0
        while len(toks) < nmax:
            if vl < 0:  # the own text ran out: the rest is the history's cached walk from vh
                if vh >= 0:
                    t2, _, p2, _ = sam.path(vh)  # type: ignore[union-attr]
                    for j in range(min(len(p2), nmax - len(toks))):
                        prob *= p2[j]
                        if prob < min_prob:
                            break
                        toks.append(int(t2[j]))
                        probs.append(p2[j])
                break
            total = local.follow(vl)
            hn = None
            bt, bn = -1, 0
            children = lnxt[vl]
            if vh >= 0:
                hn = sam.nxt[vh]  # type: ignore[union-attr]
                hcnt = sam.cnt  # type: ignore[union-attr]
                total += sam.fol[vh]  # type: ignore[union-attr]
                c, k = sam.best(vh)  # type: ignore[union-attr]
                if k > 0:
                    u = children.get(c)
                    bt, bn = c, k + (lcnt[u] if u is not None else 0)
            if total <= 0:
                break
            for c, u in children.items():
                k = lcnt[u]
                if hn is not None:
                    h = hn.get(c)
                    if h is not None:
                        k += hcnt[h]
                if k > bn or (k == bn and c < bt):
                    bt, bn = c, k
            p = bn / total
            prob *= p
            if bn == 0 or prob < min_prob:
                break
            toks.append(bt)
            probs.append(p)
            vl = children.get(bt, -1)
            vh = hn.get(bt, -1) if hn is not None else -1
        if not toks:
            return _EMPTY_I, _EMPTY_F
        return np.array(toks, dtype=np.int64), np.array(probs, dtype=np.float32)
