"""The literature drafters: omni (OmniDraft's n-gram cache), stand (STAND's n-gram tree) and
prevrollout (SPEC-RL): decisions on crafted histories, brute-force references, the determinism
contract, tree match lengths and `specroll trace match` end to end."""

from __future__ import annotations

import numpy as np
import pytest

from specroll.cli import main
from specroll.core.errors import SpecrollError
from specroll.policies import (
    DRAFTERS,
    OmniDrafter,
    PrevRolloutDrafter,
    StandDrafter,
    compute_match_lengths,
    make_drafter,
    tree_conf,
    tree_match,
)
from specroll.traces import read_trace, write_trace
from tests.policies.test_match import small_trace

# ---- brute-force reference: counts over the content, the documented back-off walk -------------------


def naive_counts(hist: list[tuple[list[int], list[int]]], own: list[int], ctx: list[int]) -> dict[int, int]:
    """Continuations of ``ctx``: history occurrences predicting a response token + own occurrences."""
    n, out = len(ctx), {}
    for left, resp in hist:
        seq = left + resp
        for i in range(max(len(left), n), len(seq)):
            if seq[i - n:i] == ctx:
                out[seq[i]] = out.get(seq[i], 0) + 1
    for i in range(n, len(own)):
        if own[i - n:i] == ctx:
            out[own[i]] = out.get(own[i], 0) + 1
    return out


def naive_dist(hist, own, text, sizes) -> dict[int, int]:
    for n in sorted(sizes, reverse=True):
        if n <= len(text) and (d := naive_counts(hist, own, text[-n:])):
            return d
    return {}


def naive_branch(hist, own, sizes, kmax, min_prob, first=None):
    text, toks, probs, prob = list(own), [], [], 1.0
    while len(toks) < kmax:
        d = naive_dist(hist, own, text, sizes)
        if not d:
            break
        c = first if (first is not None and not toks) else min(d, key=lambda t: (-d[t], t))
        p = d[c] / sum(d.values())
        prob *= p
        if prob < min_prob:
            break
        toks.append(c)
        probs.append(p)
        text.append(c)
    return toks, probs


def naive_tree(hist, own, sizes, kmax, min_prob, width):
    d = naive_dist(hist, own, own, sizes)
    firsts = sorted(d, key=lambda t: (-d[t], t))[:width]
    out = [naive_branch(hist, own, sizes, kmax, min_prob, first=f) for f in firsts]
    return [b for b in out if b[0]]


def fill(d, hist: dict[tuple[int, int], list[tuple[list[int], list[int]]]], order=None) -> None:
    """hist: (step, prompt_id) -> [(prompt, response)]; added step by step (in ``order``)."""
    keys = sorted(hist) if order is None else order
    for s, p in keys:
        for prompt, resp in hist[(s, p)]:
            d.add_rollout(s, p, np.array(prompt), np.array(resp))


def lists(toks, probs):
    assert toks.dtype == np.int64 and probs.dtype == np.float32 and toks.shape == probs.shape
    return toks.tolist(), probs.tolist()


# ---- registry and parameters ------------------------------------------------------------------------


def test_registry_and_metadata():
    assert {"omni", "stand", "prevrollout"} <= set(DRAFTERS.names())
    assert isinstance(make_drafter("omni"), OmniDrafter) and make_drafter("omni").kmax == 8
    s = make_drafter("stand", tree_width=4)
    assert isinstance(s, StandDrafter) and s.name == "stand" and s.tree_width == 4
    meta = s.to_meta()
    assert meta["kind"] == "stand" and meta["tree_width"] == 4 and meta["params"]["max_ngram"] == 4
    p = make_drafter("prevrollout")
    assert isinstance(p, PrevRolloutDrafter) and p.kmax == 32 and p.uses_sample
    assert "tree_width" not in make_drafter("omni").to_meta()


@pytest.mark.parametrize("name, params, needle", [
    ("omni", {"max_ngram": 0}, "max_ngram"),
    ("omni", {"min_ngram": 3, "max_ngram": 2}, "min_ngram"),
    ("omni", {"window": 0}, "window"),
    ("omni", {"min_prob": 2}, "min_prob"),
    ("stand", {"tree_width": 0}, "tree_width"),
    ("stand", {"tree_width": True}, "tree_width"),
    ("prevrollout", {"window": 0}, "window"),
    ("prevrollout", {"depth": 3}, "no parameter"),
])
def test_bad_parameters(name, params, needle):
    with pytest.raises(SpecrollError, match=needle):
        make_drafter(name, **params)


@pytest.mark.parametrize("name", ["omni", "stand", "prevrollout"])
def test_bad_calls(name):
    d = make_drafter(name)
    with pytest.raises(SpecrollError, match="unknown request"):
        d.propose(3)
    d.begin(3, 0, [1, 2])
    with pytest.raises(SpecrollError, match="already began"):
        d.begin(3, 0, [1, 2])
    with pytest.raises(SpecrollError, match="negative"):
        d.extend(3, [-4])
    d.end(3)
    with pytest.raises(SpecrollError, match="unknown request"):
        d.end(3)


# ---- omni: crafted states --------------------------------------------------------------------------


def test_omni_learns_from_every_prompt_and_counts_decide():
    d = make_drafter("omni", max_ngram=2)
    d.start_step(0)
    fill(d, {(0, 1): [([9, 8], [1, 2, 3])], (0, 2): [([7, 8], [1, 2, 4]), ([7, 8], [1, 2, 4])]})
    d.start_step(1)
    d.begin(0, 5, [6, 8])  # a third prompt: only the shared context "8" links it to the history
    toks, probs = lists(*d.propose(0))
    # after "8": 1 (3 of 3); after "8 1": 2; after "1 2": 4 twice, 3 once -> 4 with 2/3
    assert toks == [1, 2, 4] and probs == pytest.approx([1.0, 1.0, 2 / 3])


def test_omni_ties_go_to_the_smallest_token_and_min_prob_cuts():
    d = make_drafter("omni", max_ngram=1, min_prob=0.3)
    d.start_step(0)
    fill(d, {(0, 0): [([5], [9, 4]), ([5], [9, 3])]})
    d.start_step(1)
    d.begin(0, 1, [9])
    assert lists(*d.propose(0)) == ([3], [0.5])  # "9" -> 3 or 4, tie: 3; then "3" -> nothing
    d2 = make_drafter("omni", max_ngram=1, min_prob=0.6)
    d2.start_step(0)
    fill(d2, {(0, 0): [([5], [9, 4]), ([5], [9, 3])]})
    d2.start_step(1)
    d2.begin(0, 1, [9])
    assert lists(*d2.propose(0)) == ([], [])


def test_omni_window_evicts_and_the_current_step_is_not_visible():
    d = make_drafter("omni", max_ngram=1, window=1)
    d.start_step(0)
    fill(d, {(0, 0): [([5], [1, 2])]})
    d.start_step(1)
    fill(d, {(1, 0): [([5], [1, 3])]})          # step 1's rollouts: visible from step 2 only
    d.begin(0, 0, [1])
    assert lists(*d.propose(0))[0] == [2]
    d.end(0)
    d.start_step(2)                              # window 1: step 1 only
    d.begin(0, 0, [1])
    assert lists(*d.propose(0))[0] == [3]


def test_omni_own_text_counts_add_to_the_history():
    d = make_drafter("omni", max_ngram=1)
    d.start_step(0)
    fill(d, {(0, 0): [([5], [1, 2])]})
    d.start_step(1)
    d.begin(0, 0, [1, 3, 1, 3, 1])   # own: "1" -> 3 twice; history: "1" -> 2 once
    toks, probs = lists(*d.propose(0))
    assert toks[0] == 3 and probs[0] == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(6))
def test_omni_and_stand_equal_the_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    sizes = range(1, 4)
    hist = {(0, p): [(rng.integers(0, 4, 3).tolist(), rng.integers(0, 4, int(rng.integers(3, 15))).tolist())
                     for _ in range(3)] for p in range(2)}
    omni = make_drafter("omni", max_ngram=3, min_prob=0.05)
    stand = make_drafter("stand", max_ngram=3, min_prob=0.05, tree_width=3)
    for d in (omni, stand):
        d.start_step(0)
        fill(d, hist)
        d.start_step(1)
    prompt = rng.integers(0, 4, 3).tolist()
    y = rng.integers(0, 4, 20).tolist()
    every = [(pr[-3:], r) for rolls in hist.values() for pr, r in rolls]
    mine = [(pr[-3:], r) for pr, r in hist[(0, 1)]]
    omni.begin(0, 1, prompt)
    stand.begin(0, 1, prompt)
    for t in range(len(y)):
        own = prompt + y[:t]
        want = naive_branch(every, own, sizes, 8, 0.05)
        toks, probs = lists(*omni.propose(0))
        assert toks == want[0] and probs == pytest.approx(want[1], rel=1e-6), t
        tree = stand.propose_tree(0)
        want_tree = naive_tree(mine, own, sizes, 8, 0.05, 3)
        assert [b[0].tolist() for b in tree] == [w[0] for w in want_tree], t
        for (_, p), w in zip(tree, want_tree):
            assert p.tolist() == pytest.approx(w[1], rel=1e-6)
        omni.extend(0, y[t:t + 1])
        stand.extend(0, y[t:t + 1])


# ---- stand: the tree -------------------------------------------------------------------------------


def stand_with(rollouts, prompt, **params):
    d = make_drafter("stand", **params)
    d.start_step(0)
    fill(d, {(0, 7): [(prompt, r) for r in rollouts]})
    d.start_step(1)
    d.begin(0, 7, prompt)
    return d


def test_stand_branches_are_the_top_first_tokens_extended_greedily():
    d = stand_with([[1, 2, 3], [1, 2, 3], [4, 5], [6, 7], [4, 8]], prompt=[9], max_ngram=2, tree_width=2)
    tree = d.propose_tree(0)
    # first tokens after "9": 1 (2), 4 (2), 6 (1): top 2 = 1, 4 (tie by id); 4 -> 5 or 8 (tie: 5)
    assert [t.tolist() for t, _ in tree] == [[1, 2, 3], [4, 5]]
    assert tree[0][1].tolist() == pytest.approx([0.4, 1, 1])
    assert tree[1][1].tolist() == pytest.approx([0.4, 0.5])
    assert lists(*d.propose(0)) == ([1, 2, 3], pytest.approx([0.4, 1, 1]))
    # the tree's conditionals: S(1) = 0.8, S(2) = 0.4 + 0.2, S(3) = 0.4
    assert tree_conf(tree).tolist() == pytest.approx([0.8, 0.6 / 0.8, 0.4 / 0.6])


def test_stand_is_per_prompt_and_width_one_is_a_chain():
    d = make_drafter("stand", tree_width=1)
    d.start_step(0)
    fill(d, {(0, 1): [([9], [1, 2])], (0, 2): [([9], [3, 4])]})
    d.start_step(1)
    d.begin(0, 2, [9])
    tree = d.propose_tree(0)
    assert len(tree) == 1 and tree[0][0].tolist() == [3, 4]


def test_tree_match_takes_the_branch_that_matches():
    tree = [(np.array([1, 2, 3]), np.ones(3, np.float32)), (np.array([4, 5, 6]), np.ones(3, np.float32))]
    assert tree_match(tree, [4, 5, 9]) == (2, 1)
    assert tree_match(tree, [1, 2, 3, 4]) == (3, 0)
    assert tree_match(tree, [7]) == (0, 0)
    assert tree_conf([]).size == 0


# ---- prevrollout -------------------------------------------------------------------------------------


def prev_with(steps: dict[int, dict[int, list[int]]], pid=3, **params):
    d = make_drafter("prevrollout", **params)
    for s in sorted(steps):
        d.start_step(s)
        for g, resp in steps[s].items():
            d.add_rollout(s, pid, np.array([1]), np.array(resp), sample=g)
    d.start_step(max(steps) + 1)
    return d


def test_prevrollout_proposes_the_same_sample_from_the_same_position():
    d = prev_with({0: {0: [5, 6, 7, 8], 1: [5, 9, 7]}}, kmax=2)
    d.begin(10, 3, [1], sample=1)
    assert lists(*d.propose(10)) == ([5, 9], [1.0, 0.5])   # position 1: 9 vs 6, one of two agrees
    d.extend(10, [5, 6])                                    # the request diverged: same position still
    assert lists(*d.propose(10)) == ([7], [1.0])
    d.extend(10, [7])
    assert lists(*d.propose(10)) == ([], [])
    d.begin(11, 3, [1], sample=0)
    assert lists(*d.propose(11))[0] == [5, 6]
    d.begin(12, 3, [1], sample=4)                           # no such sample last step
    assert lists(*d.propose(12)) == ([], [])
    d.begin(13, 8, [1], sample=0)                           # another prompt
    assert lists(*d.propose(13)) == ([], [])


def test_prevrollout_takes_the_most_recent_step_in_its_window():
    d = prev_with({0: {0: [1, 1]}, 1: {0: [2, 2]}}, window=2)
    d.begin(0, 3, [1], sample=0)
    assert lists(*d.propose(0))[0] == [2, 2]
    d1 = prev_with({0: {0: [1, 1]}, 1: {1: [2, 2]}}, window=2)
    d1.begin(0, 3, [1], sample=0)
    assert lists(*d1.propose(0))[0] == [1, 1]              # step 1 has no sample 0: step 0's
    d2 = prev_with({0: {0: [1, 1]}, 1: {1: [2, 2]}}, window=1)
    d2.begin(0, 3, [1], sample=0)
    assert lists(*d2.propose(0))[0] == []


# ---- determinism contract and match lengths -----------------------------------------------------------


@pytest.mark.parametrize("name", ["omni", "stand"])
def test_proposals_depend_on_content_only(name):
    rng = np.random.default_rng(5)
    phrases = [rng.integers(0, 30, int(rng.integers(2, 7))).tolist() for _ in range(10)]

    def text(n):
        return [t for i in rng.integers(0, 10, n) for t in phrases[i]]

    hist = {(0, p % 3): [([1, 2], text(8)) for _ in range(2)] for p in range(3)}
    prompt, y = text(3), text(20)

    def run(order, chunked):
        d = make_drafter(name)
        d.start_step(0)
        fill(d, hist, order)
        d.start_step(1)
        d.begin(0, 1, prompt)
        out, t = {}, 0
        while t < len(y):
            c = int(rng.integers(1, 5)) if chunked else 1
            out[t] = d.propose_tree(0) if name == "stand" else [d.propose(0)]
            if chunked:
                d.propose(0)
            d.extend(0, y[t:t + c])
            t += c
        return out

    base = run(sorted(hist), False)
    other = run(sorted(hist, reverse=True), True)
    assert other
    for t, branches in other.items():
        assert [(a.tolist(), b.tolist()) for a, b in branches] == \
            [(a.tolist(), b.tolist()) for a, b in base[t]], t


def test_tree_match_lengths_and_metadata():
    trace = small_trace(seed=2, steps=3)
    out = compute_match_lengths(trace, "stand", tree_width=3)
    chain = compute_match_lengths(trace, "stand", tree_width=1)
    meta = out.meta.extra["drafters"]["stand"]
    assert meta["tree_width"] == 3 and meta["kmax"] == 8
    m3, _ = out.ragged("match_stand")
    m1, _ = chain.ragged("match_stand")
    assert (m3 >= m1).all() and m3.sum() > m1.sum()      # more branches never match less
    # the naive tree replay at every position
    steps, pids = trace.column("step"), trace.column("prompt_id")
    tv, toff = trace.ragged("token_ids")
    pv, poff = trace.ragged("prompt_token_ids")
    conf = out.ragged("conf_stand")[0].reshape(-1, 8)
    for row in range(len(trace)):
        visible = [r for r in range(len(trace))
                   if pids[r] == pids[row] and steps[row] - 4 <= steps[r] < steps[row]]
        hist = [(pv[poff[r]:poff[r + 1]].tolist()[-4:], tv[toff[r]:toff[r + 1]].tolist()) for r in visible]
        prompt, y = pv[poff[row]:poff[row + 1]].tolist(), tv[toff[row]:toff[row + 1]].tolist()
        for t in range(len(y)):
            tree = [(np.array(a, dtype=np.int64), np.array(p, dtype=np.float32))
                    for a, p in naive_tree(hist, prompt + y[:t], range(1, 5), 8, 0.1, 3)]
            assert m3[toff[row] + t] == tree_match(tree, y[t:])[0]
            c = tree_conf(tree)
            assert conf[toff[row] + t, :len(c)].tolist() == pytest.approx(c.tolist(), rel=1e-6)


def test_prevrollout_match_lengths_use_the_sample():
    trace = small_trace(seed=4, steps=2, prompts=2, samples=3)
    out = compute_match_lengths(trace, "prevrollout", kmax=40)
    m, off = out.ragged("match_prevrollout")
    tv, toff = trace.ragged("token_ids")
    key = {(s, p, g): r for r, (s, p, g) in enumerate(zip(trace.column("step"), trace.column("prompt_id"),
                                                           trace.column("sample")))}
    for (s, p, g), row in key.items():
        y = tv[toff[row]:toff[row + 1]].tolist()
        ref = tv[toff[key[(s - 1, p, g)]]:toff[key[(s - 1, p, g)] + 1]].tolist() if s > 0 else []
        for t in range(len(y)):
            want = 0
            while t + want < len(y) and t + want < len(ref) and y[t + want] == ref[t + want]:
                want += 1
            assert m[off[row] + t] == min(want, 40), (s, p, g, t)
    assert m.sum() > 0


@pytest.mark.parametrize("drafter, extra", [("omni", []), ("stand", ["--param", "tree_width=2"]),
                                            ("prevrollout", ["--param", "kmax=16"])])
def test_specroll_trace_match_runs_each_drafter(tmp_path, capsys, drafter, extra):
    src = tmp_path / "t.parquet"
    write_trace(small_trace(seed=1), src)
    dst = tmp_path / "m.parquet"
    assert main(["trace", "match", str(src), "--drafter", drafter, *extra, "--out", str(dst)]) == 0
    tr = read_trace(dst)
    assert tr.has(f"match_{drafter}") and tr.has(f"conf_{drafter}")
    assert drafter in tr.meta.extra["drafters"]
    m, _ = tr.ragged(f"match_{drafter}")
    assert m.sum() > 0
