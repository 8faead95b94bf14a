"""Suffix automata: the index behind the suffix drafter (see docs/drafters.md).

A suffix automaton (SAM) of a text has one state per class of substrings that end at the same set
of positions ("endpos"), at most 2n states and 3n transitions, and is built online in amortized
O(1) per appended token. It gives the suffix drafter what a depth-limited suffix trie with counts
gives SuffixDecoding, without the trie's ``depth`` nodes per token:

- matching: the longest suffix of a growing context that occurs in the text is tracked in O(1)
  amortized per context token (follow a transition, else fall back along suffix links);
- counts: for a matched string s in state v and a token c, the number of occurrences of s
  followed by c is the (weighted) size of endpos(delta(v, c)), the same for every s in v;
- the walk: the most frequent continuation of s, then of s+c, ... is a walk along transitions.

Everything a query returns is a function of the text's *content* (occurrence counts, token ids
for ties), never of insertion order, so two automata of the same multiset of sequences answer
identically. ``HistorySAM`` is frozen after construction (earlier steps' rollouts) and caches the
greedy continuation of each state it is asked about; ``LocalSAM`` grows with a request's own
prompt and output and keeps its counts exact as it grows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_F = np.zeros(0, dtype=np.float32)
_EMPTY_I.flags.writeable = False
_EMPTY_F.flags.writeable = False
_UNKNOWN: tuple[int, float, int] = (-1, 0.0, -1)


class _Automaton:
    """States are list indices; state 0 is the root (the empty string)."""

    __slots__ = ("nxt", "link", "length", "last")

    def __init__(self) -> None:
        self.nxt: list[dict[int, int]] = [{}]
        self.link: list[int] = [-1]
        self.length: list[int] = [0]
        self.last = 0

    @property
    def n_states(self) -> int:
        return len(self.length)

    def _append(self, c: int) -> tuple[int, int, int]:
        """Add token ``c`` at the end; return (new state, clone or -1, the clone's source or -1)."""
        nxt, link, length = self.nxt, self.link, self.length
        cur = len(length)
        nxt.append({})
        length.append(length[self.last] + 1)
        link.append(0)
        p = self.last
        while p != -1 and c not in nxt[p]:
            nxt[p][c] = cur
            p = link[p]
        clone = q = -1
        if p != -1:
            q = nxt[p][c]
            if length[p] + 1 == length[q]:
                link[cur] = q
            else:
                clone = len(length)
                nxt.append(nxt[q].copy())
                length.append(length[p] + 1)
                link.append(link[q])
                while p != -1 and nxt[p].get(c) == q:
                    nxt[p][c] = clone
                    p = link[p]
                link[q] = clone
                link[cur] = clone
        self.last = cur
        return cur, clone, q

    def step(self, v: int, length: int, c: int, depth: int) -> tuple[int, int]:
        """Matching: from (state v, matched length) read context token c; the longest suffix of the
        context that occurs in the text, capped at ``depth`` tokens, as (state, length)."""
        nxt, link, lens = self.nxt, self.link, self.length
        while True:
            u = nxt[v].get(c)
            if u is not None:
                v, length = u, length + 1
                break
            if v == 0:
                return 0, 0
            v = link[v]
            length = lens[v]
        if length > depth:
            length = depth
            while lens[link[v]] >= depth:
                v = link[v]
        return v, length

    def match(self, tokens: Sequence[int], depth: int) -> tuple[int, int]:
        """Match a context from scratch (only its last ``depth`` tokens can matter)."""
        v = length = 0
        for c in tokens[-depth:] if depth > 0 else ():
            v, length = self.step(v, length, int(c), depth)
        return v, length


class HistorySAM(_Automaton):
    """Frozen automaton over several sequences, each a (context, weighted part) pair.

    An occurrence counts only where the token it ends on has weight 1: for the suffix drafter the
    response tokens of a history rollout count, the prompt tail before them is left context only.
    ``cnt[v]`` = weighted occurrences of v's strings; ``fol[v]`` = those followed by a counted
    token = sum over c of ``cnt[delta(v, c)]``. Separators between sequences are unique negative
    tokens that never occur in a context and weigh 0, so no match crosses two sequences.
    """

    __slots__ = ("cnt", "fol", "kmax", "min_prob", "_best", "_path", "_edges", "tokens")

    def __init__(self, sequences: Iterable[tuple[Sequence[int], Sequence[int]]], *, kmax: int,
                 min_prob: float) -> None:
        super().__init__()
        self.kmax = int(kmax)
        self.min_prob = float(min_prob)
        w_end = [0]
        w_next = [0]
        self.tokens = 0
        sep = -1
        for left, counted in sequences:
            toks = [int(t) for t in left] + [int(t) for t in counted]
            weights = [0] * len(left) + [1] * len(counted)
            self.tokens += len(toks)
            for i, c in enumerate(toks):
                cur, clone, _ = self._append(c)
                w_end.append(weights[i])
                w_next.append(weights[i + 1] if i + 1 < len(toks) else 0)
                if clone >= 0:  # a clone holds no position of its own: counts come from below
                    w_end.append(0)
                    w_next.append(0)
            # A fresh separator: nothing matches across it; the next sequence starts from the root.
            cur, clone, _ = self._append(sep)
            w_end.append(0)
            w_next.append(0)
            sep -= 1
        # endpos sizes: every state's count is its own weight plus its suffix-link children's,
        # so accumulate from the longest states down (a counting sort by length).
        n = self.n_states
        length, link = self.length, self.link
        buckets: list[list[int]] = [[] for _ in range(max(length) + 1)]
        for v in range(1, n):
            buckets[length[v]].append(v)
        cnt, fol = w_end, w_next
        for bucket in reversed(buckets):
            for v in bucket:
                p = link[v]
                cnt[p] += cnt[v]
                fol[p] += fol[v]
        self.cnt = cnt
        self.fol = fol
        self._best: dict[int, tuple[int, int]] = {}
        self._path: dict[int, tuple[np.ndarray, np.ndarray, list[float], int]] = {}
        self._edges: dict[int, tuple[int, float, int] | None] = {}

    def best(self, v: int) -> tuple[int, int]:
        """(token, count) of the most frequent counted continuation of state v (ties: smallest
        token id); (-1, 0) when v has none."""
        got = self._best.get(v)
        if got is None:
            cnt = self.cnt
            bt, bn = -1, 0
            for c, u in self.nxt[v].items():
                k = cnt[u]
                if k > bn or (k == bn and k > 0 and c < bt):
                    bt, bn = c, k
            got = self._best[v] = (bt, bn)
        return got

    def path(self, v: int) -> tuple[np.ndarray, np.ndarray, list[float], int]:
        """The greedy walk from state v while its path probability stays >= min_prob, up to kmax
        tokens: (tokens, per-token conditionals as float32 and as float64, length). Cached; the
        arrays are shared with every caller (read-only by contract: flagging them read-only
        costs as much as the rest of a cached proposal)."""
        got = self._path.get(v)
        if got is not None:
            return got
        edges = self._edges
        toks: list[int] = []
        probs: list[float] = []
        prob, kmax, min_prob = 1.0, self.kmax, self.min_prob
        u = v
        while len(toks) < kmax:
            s = edges.get(u, _UNKNOWN)
            if s is _UNKNOWN:
                s = self._edge(u)
            if s is None:
                break
            c, p, u = s
            prob *= p
            if prob < min_prob:  # every longer prefix is less likely still
                break
            toks.append(c)
            probs.append(p)
        if toks:
            got = (np.array(toks, dtype=np.int64), np.array(probs, dtype=np.float32), probs, len(toks))
        else:
            got = (_EMPTY_I, _EMPTY_F, probs, 0)
        self._path[v] = got
        return got

    def _edge(self, u: int) -> tuple[int, float, int] | None:
        """(best token, its conditional, next state) from state u, memoized; None at a dead end."""
        c, k = self.best(u)
        edge = (c, k / self.fol[u], self.nxt[u][c]) if k > 0 else None
        self._edges[u] = edge
        return edge

    def proposal_state(self, v: int, length: int) -> tuple[int, int]:
        """The longest suffix (of the matched one) that is followed by a counted token."""
        fol, link = self.fol, self.link
        while v and fol[v] == 0:
            v = link[v]
            length = self.length[v]
        return v, length


class LocalSAM(_Automaton):
    """Online automaton of one request's own text (prompt, then output as it grows), every
    position counted. ``cnt[v]`` = |endpos(v)| is kept exact on every append by walking the new
    text's suffix chain (each state on it gains the new end position); ``stamp[v] == n`` marks
    those states, whose last occurrence is the text's end and so has no continuation yet.
    """

    __slots__ = ("cnt", "stamp", "n", "depth", "mv", "ml")

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.cnt = [0]
        self.stamp = [0]
        self.n = 0
        self.depth = int(depth)
        self.mv = 0
        self.ml = 0
        """(state, length) of the longest suffix of the text that occurred before its end, capped
        at ``depth``: the request's own-text match."""

    def extend(self, tokens: Iterable[int]) -> None:
        cnt, stamp, link, length = self.cnt, self.stamp, self.link, self.length
        depth = self.depth
        for c in tokens:
            cur, clone, q = self._append(c)
            cnt.append(0)
            stamp.append(0)
            if clone >= 0:
                cnt.append(cnt[q])
                stamp.append(stamp[q])
            self.n += 1
            n = self.n
            v = cur
            while v > 0:
                cnt[v] += 1
                stamp[v] = n
                v = link[v]
            v = link[cur]
            ml = length[v]
            if ml > depth:
                ml = depth
                while length[link[v]] >= depth:
                    v = link[v]
            self.mv, self.ml = v, ml

    def follow(self, v: int) -> int:
        """Occurrences of v's strings followed by a token (all but one at the text's end)."""
        return self.cnt[v] - (self.stamp[v] == self.n)
