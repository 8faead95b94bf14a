"""The STAND-style drafter: n-gram next-token *distributions* and a tree of draft branches.

STAND (STochastic Adaptive N-gram Drafting; Song et al., arXiv 2506.04708) keeps, per n-gram of
the reasoning trajectories seen so far, a next-token probability distribution (from the target's
logits) rather than one continuation, and drafts a token *tree* with Gumbel-top-k sampling and a
data-driven tree shape. Here:

- content: the rollouts of the same prompt from RL steps s - window .. s - 1 (in RL the G samples
  of a prompt across steps play the role of STAND's best-of-N trajectories) plus the request's own
  text, counted as in ``omni`` (policies/_omni.py), one bucket per prompt;
- distributions: next-token *counts* per n-gram (the drafter only sees emitted tokens, not the
  target's logits): p(c | ctx) = count(ctx + c) / count(ctx followed by anything);
- tree: the ``tree_width`` most probable first tokens (ties: smallest id) at the longest context
  with continuations, each extended greedily (backing off) while its path probability stays >=
  ``min_prob``; branch 0 is the most probable. Deterministic top-w instead of STAND's Gumbel
  sampling, so the drafter stays a pure function of its content (policies/_drafters.py).

Tree contract (docs/systems/drafters.md): ``tree_width`` w; ``propose_tree(rid)`` -> branches
[(tokens, per-token conditionals)] with distinct first tokens; ``propose(rid)`` -> branch 0 (what a
single-branch verifier uses); :func:`tree_conf` -> the tree's per-depth conditionals (the
product of the first k is the drafter's probability that a depth-k tree accepts k tokens).
Drafting depth k verifies up to w * k nodes and accepts min(k, m_t), m_t = the longest branch
prefix that matches the actual continuation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from specroll.core.params import check_number
from specroll.policies._drafters import register_drafter
from specroll.policies._omni import _EMPTY_F, _EMPTY_I, OmniDrafter, greedy_branch, top_next


@register_drafter("stand")
class StandDrafter(OmniDrafter):
    """Per-prompt n-gram distributions drafting a tree of ``tree_width`` branches.

    Defaults (ours): ``tree_width`` 3 (STAND's trees are data-driven; 3 first tokens keep the
    verified nodes at 3k), n-gram sizes 1..4, ``window`` 4, ``min_prob`` 0.1 and ``kmax`` 8 as
    ``omni``/``suffix``."""

    @dataclasses.dataclass
    class Params(OmniDrafter.Params):
        tree_width: int = 3

    per_prompt = True

    def validate(self) -> None:
        super().validate()
        check_number(self.params.tree_width, "tree_width", integer=True, lo=1,
                     fix="pass tree_width=3 (branches of the draft tree)")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.tree_width = int(self.params.tree_width)

    def propose_tree(self, rid: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Up to ``tree_width`` branches (tokens int64, conditionals float32), distinct first
        tokens, most probable first; empty when nothing clears ``min_prob``."""
        text = self._get(rid)
        firsts, total = top_next(self.history, text, text.tokens[-max(self.sizes):], self.tree_width)
        out = []
        for first in firsts:
            toks, probs = greedy_branch(self.history, text, first, total, self.kmax, self.min_prob)
            if toks:
                out.append((np.array(toks, dtype=np.int64), np.array(probs, dtype=np.float32)))
        return out

    def propose(self, rid: int) -> tuple[np.ndarray, np.ndarray]:
        branches = self.propose_tree(rid)
        return branches[0] if branches else (_EMPTY_I, _EMPTY_F)

    def to_meta(self) -> dict[str, Any]:
        meta = super().to_meta()
        meta["tree_width"] = self.tree_width
        return meta


def tree_conf(branches: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """float32 (depth,): conf[j] = S(j + 1) / S(j), S(j) = sum over branches of the product of
    their first j conditionals (S(0) = 1). Branches share only the root, so S(k) is the drafter's
    probability that some branch matches k tokens: prod(conf[:k]) = S(k), the tree's analog of a
    chain's path probability (what ``draft_conf`` means to the policies)."""
    depth = max((len(t) for t, _ in branches), default=0)
    if depth == 0:
        return _EMPTY_F
    s = np.zeros(depth + 1, dtype=np.float64)
    s[0] = 1.0
    for _, p in branches:
        s[1:len(p) + 1] += np.cumprod(p.astype(np.float64))
    return (s[1:] / s[:-1]).astype(np.float32)


def tree_match(branches: list[tuple[np.ndarray, np.ndarray]], actual: list[int]) -> tuple[int, int]:
    """(m, b): the longest prefix m of ``actual`` matched by a branch, and that branch (0 if none)."""
    best, which = 0, 0
    for b, (toks, _) in enumerate(branches):
        m = 0
        for a in toks.tolist():
            if m >= len(actual) or actual[m] != a:
                break
            m += 1
        if m > best:
            best, which = m, b
    return best, which
