"""Token-tree verification on a tiny random Llama: layout and masks, the tree forward against chain
forwards of each branch, the accepted-KV move, and tree speculation reproducing AR decoding."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from specroll.policies import make_policy, tree_match
from specroll.real_backend import KVCache
from specroll.real_backend._tree import accept_tree, build_tree, move_accepted_kv
from tests.real_backend.test_model_common import TINY, tiny_model
from tests.real_backend.test_model_drafter import engine, requests

CFG = replace(TINY, n_layers=3, max_ctx=160)


def test_layout_mask_and_acceptance_on_a_crafted_tree():
    tb = build_tree([4], [[np.array([10, 11, 12]), np.array([20, 21])]], np.array([2]))
    assert tb.tokens.tolist() == [[4, 10, 11, 20, 21]] and tb.depth.tolist() == [[0, 1, 2, 1, 2]]
    assert tb.starts == [[1, 3]] and tb.lens == [[2, 2]] and tb.q.tolist() == [5]
    want = np.array([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 1, 0],
                     [1, 0, 0, 1, 1]], bool)
    assert np.array_equal(tb.mask[0], want)
    # target samples per node: root -> 20, node 3 (20) -> 21, node 4 -> 7: branch 1, 2 accepted, bonus 7
    assert accept_tree(tb, np.array([[20, 0, 0, 21, 7]])) == [(1, 2, 4)]
    assert accept_tree(tb, np.array([[10, 5, 0, 0, 0]])) == [(0, 1, 1)]      # bonus from node 1: 5
    assert accept_tree(tb, np.array([[9, 0, 0, 0, 0]])) == [(0, 0, 0)]
    empty = build_tree([4, 5], [[np.array([1])], []], np.array([0, 3]))
    assert empty.q.tolist() == [1, 1]


def test_tree_forward_equals_chain_forwards_of_each_branch():
    model = tiny_model(1, CFG)
    prompt = torch.tensor([[5, 9, 13, 2, 7, 1]])
    branches = [np.array([10, 11, 12]), np.array([20, 21]), np.array([30])]
    tb = build_tree([4], [branches], np.array([3]))
    cache = KVCache(CFG, 1, 128)
    model(prompt, torch.tensor([0]), torch.tensor([0]), cache)
    start = torch.tensor([6])
    tree = model(torch.as_tensor(tb.tokens), torch.tensor([0]), start, cache,
                 positions=start[:, None] + torch.as_tensor(tb.depth), tree=torch.as_tensor(tb.mask))
    for b, s in enumerate(tb.starts[0]):
        path = [4] + branches[b].tolist()
        chain_cache = KVCache(CFG, 1, 128)
        model(prompt, torch.tensor([0]), torch.tensor([0]), chain_cache)
        chain = model(torch.tensor([path]), torch.tensor([0]), start, chain_cache)
        nodes = [0] + list(range(s, s + len(branches[b])))
        if b == 0:  # laid out as the chain: the same bits
            assert torch.equal(tree[0, nodes], chain[0])
        else:       # the same attention over other cache columns: equal up to float rounding
            torch.testing.assert_close(tree[0, nodes], chain[0], rtol=1e-4, atol=1e-4)
        if b == 1:  # the accepted branch's K/V, moved to where the next iteration reads them
            move_accepted_kv(cache, 0, 6, s, len(branches[b]))
            got = cache.k[:, 0, :, 7:7 + len(branches[b])]
            want = chain_cache.k[:, 0, :, 7:7 + len(branches[b])]
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


class TreeScript:
    """Test double of a tree drafter: three branches per position built from a known continuation:
    a wrong first token, the continuation corrupted every ``every`` tokens, and the continuation."""

    tree_width, kmax, name = 3, 4, "treescript"

    def __init__(self, scripts, every=3):
        self.scripts, self.every, self.seen = scripts, every, {}

    def begin(self, rid, prompt_id, prompt_tokens):
        self.seen[rid] = 0

    def extend(self, rid, tokens):
        self.seen[rid] += len(tokens)

    def end(self, rid):
        pass

    def propose_tree(self, rid):
        t = self.seen[rid]
        cont = list(self.scripts.get(rid, [])[t:t + self.kmax])
        if not cont:
            return []
        bad = [(cont[0] + 7) % 90 + 3] + cont[1:]
        corrupt = [c if (t + j) % self.every else (c + 1) % 90 + 3 for j, c in enumerate(cont)]
        out, firsts = [], set()
        for b in (bad, corrupt, cont):  # distinct first tokens only (the tree contract)
            if b[0] not in firsts:
                firsts.add(b[0])
                out.append((np.array(b, dtype=np.int64), np.full(len(b), 0.5, np.float32)))
        return out

    def propose(self, rid):
        tree = self.propose_tree(rid)
        return tree[0] if tree else (np.zeros(0, np.int64), np.zeros(0, np.float32))


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_tree_speculation_equals_ar_and_accepts_the_matching_branch(temperature):
    model = tiny_model(7, CFG)

    class NoDraft(TreeScript):
        kmax = 4

    ar = engine(model, temperature=temperature, kmax=12).run_step(requests(), make_policy("ar"), NoDraft({}))
    script = {r.request.rid: r.tokens for r in ar.rollouts}
    eng = engine(model, temperature=temperature, kmax=12)
    assert eng.trees and eng.tree_width(TreeScript(script)) == 3
    spec = eng.run_step(requests(), make_policy("fixed", k=3), TreeScript(script))
    assert [r.tokens for r in spec.rollouts] == [r.tokens for r in ar.rollouts]
    checker = TreeScript(script)
    for d in spec.decisions:
        checker.seen[d["rid"]] = d["generated"]
        y = script[d["rid"]][d["generated"]:]
        m = tree_match(checker.propose_tree(d["rid"]), y)[0] if d["k"] else 0
        assert d["accepted"] == min(d["k"], m, len(y) - 1), d
    dec = [r for r in spec.iterations if r["phase"] == "decode"]
    assert sum(r["accepted"] for r in dec) > 0
    assert max(r["q_max"] for r in dec) > 4                 # trees: more than k + 1 query tokens
    # the same drafter verified by its first branch only: same tokens, fewer accepted
    chain = engine(model, temperature=temperature, kmax=12)
    chain.trees = False
    one = chain.run_step(requests(), make_policy("fixed", k=3), TreeScript(script))
    assert [r.tokens for r in one.rollouts] == [r.tokens for r in ar.rollouts]
    assert sum(r["accepted"] for r in one.iterations) < sum(r["accepted"] for r in dec)
