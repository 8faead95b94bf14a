"""Token-tree verification for tree drafters (``stand``): layout, masks, acceptance, KV fix-up.

A request's verify row is its pending token (the root) followed by each branch's tokens, branch
after branch. Query j is written at cache position cached + j but rotated as position cached +
depth(j), and sees the cached context, the root and its own branch up to itself (``Transformer``'s
``positions`` / ``tree`` arguments). The target's keyed sample at every node is keyed by the node's
response position (generated + depth), so the token it samples after a node is exactly what
autoregressive decoding samples after that node's path: accepting the longest branch prefix equal
to those samples, plus the target's token after it, is lossless, as for a chain.

Branches share only the root (their first tokens differ), so at most one branch can be accepted.
Its accepted nodes' K/V sit at their layout positions; they are copied to cached + 1 .. cached + a,
where the next iteration expects them (nothing to do when branch 0, laid out first, is accepted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TreeBatch:
    tokens: np.ndarray      # [n, q] int64 (row i: root, then branches; right-padded)
    depth: np.ndarray       # [n, q] int64 node depth (0 = root and padding)
    mask: np.ndarray        # [n, q, q] bool: query j sees query i
    q: np.ndarray           # [n] nodes per row including the root
    starts: list[list[int]]  # per row, per branch: query index of its first node
    lens: list[list[int]]    # per row, per branch: nodes kept (<= k)
    branches: list[list[np.ndarray]]


def build_tree(pending: list[int], branches: list[list[np.ndarray]], k: np.ndarray) -> TreeBatch:
    """Lay out each row's branches truncated to depth k[i]."""
    n = len(pending)
    kept = [[b[:int(k[i])] for b in branches[i] if int(k[i]) > 0 and len(b)] for i in range(n)]
    q = np.array([1 + sum(len(b) for b in kept[i]) for i in range(n)], dtype=np.int64)
    qm = int(q.max()) if n else 1
    tokens = np.zeros((n, qm), dtype=np.int64)
    depth = np.zeros((n, qm), dtype=np.int64)
    mask = np.zeros((n, qm, qm), dtype=bool)
    idx = np.arange(qm)
    mask[:, idx, idx] = True          # every query sees itself (padding too: no empty softmax row)
    mask[:, :, 0] = True              # and the root
    starts: list[list[int]] = []
    lens: list[list[int]] = []
    for i in range(n):
        tokens[i, 0] = pending[i]
        j = 1
        st, ln = [], []
        for b in kept[i]:
            L = len(b)
            tokens[i, j:j + L] = b
            depth[i, j:j + L] = np.arange(1, L + 1)
            # node j + d sees the branch's nodes j .. j + d (a lower triangle)
            tri = np.tril(np.ones((L, L), dtype=bool))
            mask[i, j:j + L, j:j + L] = tri
            st.append(j)
            ln.append(L)
            j += L
        starts.append(st)
        lens.append(ln)
    return TreeBatch(tokens, depth, mask, q, starts, lens, kept)


def accept_tree(tb: TreeBatch, target: np.ndarray) -> list[tuple[int, int, int]]:
    """Per row (branch, accepted, node of the target's next token): the branch whose tokens equal
    the target's samples along it for longest (exact rule), and where the bonus token comes from."""
    out = []
    for i in range(len(tb.q)):
        best = (0, 0, 0)
        for b, (s, L) in enumerate(zip(tb.starts[i], tb.lens[i])):
            node, a = 0, 0
            toks = tb.branches[i][b]
            while a < L and int(toks[a]) == int(target[i, node]):
                node = s + a
                a += 1
            if a > best[1]:
                best = (b, a, node)
        out.append(best)
    return out


def move_accepted_kv(cache, slot: int, cached: int, start: int, accepted: int) -> None:
    """Copy the accepted nodes' K/V (layout positions cached + start ..) to cached + 1 .. (all layers)."""
    if accepted == 0 or start == 1:
        return
    src = torch.arange(cached + start, cached + start + accepted, device=cache.k.device)
    dst = torch.arange(cached + 1, cached + 1 + accepted, device=cache.k.device)
    for t in (cache.k, cache.v):
        t[:, slot, :, dst] = t[:, slot, :, src]
