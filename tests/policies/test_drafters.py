"""Drafters: registry, proposals on crafted histories, agreement with brute-force references, and
the determinism contract (content only: not insertion order, extend chunking, or propose calls)."""

from __future__ import annotations

import numpy as np
import pytest

from specroll.core.errors import SpecrollError
from specroll.policies import DRAFTERS, Drafter, NgramDrafter, SuffixDrafter, make_drafter

# ---- brute-force references (the documented semantics, by counting over the content) -----------


def naive_suffix(hist: list[tuple[list[int], list[int]]], own: list[int], *, depth: int = 24, kmax: int = 8,
                 min_prob: float = 0.1, spec_factor: float = 1.0, spec_offset: float = 0.0
                 ) -> tuple[list[int], list[float]]:
    """``hist``: (left context, counted response) per visible history rollout; ``own``: prompt +
    output. An occurrence counts if it ends on a response token (history) or anywhere (own)."""
    vocab = sorted({t for left, resp in hist for t in left + resp} | set(own))

    def count(w: list[int]) -> int:
        k, total = len(w), 0
        for left, resp in hist:
            seq = left + resp
            total += sum(seq[i - k + 1:i + 1] == w for i in range(max(k - 1, len(left)), len(seq)))
        return total + sum(own[i - k + 1:i + 1] == w for i in range(k - 1, len(own)))

    def continuations(w: list[int]) -> dict[int, int]:
        return {c: n for c in vocab if (n := count(w + [c]))}

    length = next((n for n in range(min(depth, len(own)), 0, -1) if continuations(own[-n:])), 0)
    if length == 0:
        return [], []
    nmax = min(kmax, int(length * spec_factor + spec_offset + 1e-6))
    w, prob, toks, probs = own[-length:], 1.0, [], []
    while len(toks) < nmax:
        d = continuations(w)
        if not d:
            break
        c = min(d, key=lambda t: (-d[t], t))
        p = d[c] / sum(d.values())
        prob *= p
        if prob < min_prob:
            break
        toks.append(c)
        probs.append(p)
        w = w + [c]
    return toks, probs


def naive_ngram(text: list[int], *, kmax: int = 10, max_ngram: int = 2, min_ngram: int = 1
                ) -> tuple[list[int], list[float]]:
    for n in range(min(max_ngram, len(text) - 1), min_ngram - 1, -1):
        gram = text[-n:]
        ends = [i for i in range(n - 1, len(text) - 1) if text[i - n + 1:i + 1] == gram]
        if ends:
            prop = text[ends[0] + 1:ends[0] + 1 + kmax]
            probs, alive = [], ends
            for j, want in enumerate(prop):
                room = [e for e in alive if e + 1 + j < len(text)]
                alive = [e for e in room if text[e + 1 + j] == want]
                probs.append(len(alive) / len(room))
            return prop, probs
    return [], []


def propose(d: Drafter, rid: int = 1) -> tuple[list[int], list[float]]:
    toks, probs = d.propose(rid)
    assert toks.dtype == np.int64 and probs.dtype == np.float32 and toks.shape == probs.shape
    assert len(toks) <= d.kmax and ((probs > 0) & (probs <= 1)).all()
    return toks.tolist(), probs.tolist()


def with_history(rollouts: list[list[int]], prompt: list[int], **params) -> SuffixDrafter:
    d = make_drafter("suffix", **params)
    d.start_step(0)
    for r in rollouts:
        d.add_rollout(0, 7, np.array(prompt), np.array(r))
    d.start_step(1)
    return d


# ---- registry and parameters ---------------------------------------------------------------------


def test_registry_and_metadata():
    assert {"suffix", "ngram"} <= set(DRAFTERS.names())
    d = make_drafter("suffix", window=2)
    assert isinstance(d, SuffixDrafter) and d.name == "suffix" and d.kmax == 8
    meta = d.to_meta()
    assert meta["kind"] == "suffix" and meta["kmax"] == 8 and meta["params"]["window"] == 2
    assert meta["params"]["depth"] == 24 and meta["params"]["min_prob"] == 0.1
    n = make_drafter("ngram")
    assert isinstance(n, NgramDrafter) and n.kmax == 10 and n.to_meta()["params"]["max_ngram"] == 2


@pytest.mark.parametrize("name, params, needle", [
    ("nope", {}, "unknown drafter"),
    ("suffix", {"deep": 3}, "no parameter 'deep'"),
    ("suffix", {"kmax": 0}, "kmax"),
    ("suffix", {"kmax": True}, "kmax"),
    ("suffix", {"depth": 0}, "depth"),
    ("suffix", {"window": 0}, "window"),
    ("suffix", {"min_prob": 1.5}, "min_prob"),
    ("suffix", {"min_prob": "abc"}, "min_prob': must be a finite number"),
    ("suffix", {"spec_factor": -1}, "spec_factor"),
    ("suffix", {"siblings": "yes"}, "siblings"),
    ("ngram", {"min_ngram": 3, "max_ngram": 2}, "min_ngram"),
    ("ngram", {"max_ngram": 0}, "max_ngram"),
])
def test_bad_parameters(name, params, needle):
    with pytest.raises(SpecrollError, match=needle):
        make_drafter(name, **params)


@pytest.mark.parametrize("name", ["suffix", "ngram"])
def test_bad_calls(name):
    d = make_drafter(name)
    with pytest.raises(SpecrollError, match="unknown request"):
        d.propose(3)
    with pytest.raises(SpecrollError, match="unknown request"):
        d.extend(3, [1])
    d.begin(3, 0, [1, 2])
    with pytest.raises(SpecrollError, match="already began"):
        d.begin(3, 0, [1, 2])
    with pytest.raises(SpecrollError, match="negative"):
        d.extend(3, [-4])
    with pytest.raises(SpecrollError, match="integer"):
        d.extend(3, np.array([1.5]))
    d.end(3)
    with pytest.raises(SpecrollError, match="unknown request"):
        d.end(3)


# ---- suffix: crafted histories ---------------------------------------------------------------------


def test_most_frequent_child_and_its_conditional():
    d = with_history([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 5]], prompt=[9])
    d.begin(1, 7, [9])
    d.extend(1, [1, 2, 3])
    toks, probs = propose(d)
    assert toks == [4] and probs == pytest.approx([2 / 3])


def test_first_tokens_come_from_the_end_of_the_prompt():
    d = with_history([[5, 6, 7, 8], [5, 6, 7, 8]], prompt=[1, 2, 3])
    d.begin(1, 7, [1, 2, 3])
    assert propose(d) == ([5, 6, 7], [1.0, 1.0, 1.0])  # spec_factor 1: at most L = 3 tokens
    d.extend(1, [5])
    assert propose(d)[0] == [6, 7, 8]


def test_ties_go_to_the_smallest_token_id():
    for order in ([[1, 2, 7], [1, 2, 5]], [[1, 2, 5], [1, 2, 7]]):
        d = with_history(order, prompt=[9])
        d.begin(1, 7, [9])
        d.extend(1, [1, 2])
        assert propose(d) == ([5], [0.5])


def test_min_prob_cuts_the_path():
    # after 1 2 3 the ten rollouts continue with ten different tokens: p = 1/10 each
    hist = [[1, 2, 3, 10 + i, 50] for i in range(10)]
    for min_prob, want in ((0.1, [3, 10, 50]), (0.11, [3])):
        d = with_history(hist, prompt=[9], min_prob=min_prob, spec_factor=10.0)
        d.begin(1, 7, [9])
        d.extend(1, [1, 2])
        toks, probs = propose(d)
        assert toks == want and probs == pytest.approx([1.0, 0.1, 1.0][:len(want)])


def test_path_probability_is_the_product_of_conditionals():
    hist = [[1, 2, 3, 4]] * 3 + [[1, 2, 3, 5]] + [[1, 2, 6, 6]] * 2
    d = with_history(hist, prompt=[9], min_prob=0.0, spec_factor=10.0)
    d.begin(1, 7, [9])
    d.extend(1, [1])
    toks, probs = propose(d)
    assert toks[:3] == [2, 3, 4] and probs[:3] == pytest.approx([1.0, 4 / 6, 3 / 4])
    assert np.prod(probs[:3]) == pytest.approx(3 / 6)


def test_spec_factor_limits_the_proposal_by_the_match_length():
    hist = [[1, 2, 3, 4, 5, 6, 7, 8]] * 2
    d = with_history(hist, prompt=[9])
    d.begin(1, 7, [0])  # a prompt unlike the history's: only the response text can match
    d.extend(1, [1])
    assert propose(d)[0] == [2]  # L = 1 -> one token
    d2 = with_history(hist, prompt=[9], spec_factor=3.0)
    d2.begin(1, 7, [0])
    d2.extend(1, [1])
    assert propose(d2)[0] == [2, 3, 4]
    d3 = with_history(hist, prompt=[9], spec_offset=1.0, kmax=2)
    d3.begin(1, 7, [0])
    d3.extend(1, [1])
    assert propose(d3)[0] == [2, 3]  # 1 * 1 + 1 tokens, within kmax 2


def test_depth_limits_the_matched_context():
    # "8 2 3" is followed by 4 once, "2 3" (after other tokens) by 5 twice
    hist = [[8, 2, 3, 4], [0, 2, 3, 5], [1, 2, 3, 5]]
    for depth, want in ((3, [4]), (2, [5])):
        d = with_history(hist, prompt=[9], depth=depth)
        d.begin(1, 7, [9])
        d.extend(1, [8, 2, 3])
        assert propose(d)[0] == want, depth


def test_window_evicts_old_steps_and_the_current_step_is_not_visible():
    d = make_drafter("suffix", window=2)
    d.start_step(0)
    d.add_rollout(0, 7, [9], [1, 2, 3])
    d.start_step(1)
    d.add_rollout(1, 7, [9], [1, 2, 4])  # step 1's own rollout: not visible during step 1
    d.begin(1, 7, [9])
    d.extend(1, [1, 2])
    assert propose(d)[0] == [3]
    d.end(1)
    d.start_step(2)  # window 2: steps 0 and 1 -> 3 and 4 tie, 3 wins
    d.begin(1, 7, [9])
    d.extend(1, [1, 2])
    assert propose(d) == ([3], [0.5])
    d.end(1)
    d.start_step(3)  # step 0 evicted
    d.begin(1, 7, [9])
    d.extend(1, [1, 2])
    assert propose(d) == ([4], [1.0])
    d.end(1)
    d.start_step(4)  # all evicted
    d.begin(1, 7, [9])
    d.extend(1, [1, 2])
    assert propose(d)[0] == []


def test_history_is_per_prompt():
    d = with_history([[1, 2, 3]], prompt=[9])
    d.begin(1, 8, [9])  # another prompt id
    d.extend(1, [1, 2])
    assert propose(d)[0] == []


def test_own_prompt_and_output_are_used():
    d = make_drafter("suffix", spec_factor=5.0)
    d.begin(1, 0, [4, 5, 6, 7, 1])
    assert propose(d)[0] == []  # nothing occurred twice yet
    d.extend(1, [4, 5])  # the walk follows the earlier copy up to the text's end
    assert propose(d) == ([6, 7, 1, 4, 5], [1.0] * 5)
    d.extend(1, [6, 7, 1, 4])
    assert propose(d)[0] == [5, 6, 7, 1, 4]


def test_history_and_own_text_counts_add_up():
    d = with_history([[1, 2, 3], [1, 2, 3]], prompt=[0], spec_factor=5.0)
    d.begin(1, 7, [5, 5, 5])  # own text: 1 2 5 twice
    d.extend(1, [1, 2, 5, 1, 2, 5, 1, 2])
    # own text: "5 1 2 5 1 2" occurred before, followed by 5 1 2 up to the text's end; the
    # history never saw a 5, so its counts do not enter
    assert propose(d) == ([5, 1, 2], [1.0, 1.0, 1.0])
    d2 = with_history([[1, 2, 3], [1, 2, 3], [1, 2, 3]], prompt=[0], spec_factor=5.0)
    d2.begin(1, 7, [5, 5, 5])
    d2.extend(1, [1, 2, 5, 2])
    # longest suffix "5 2"? never followed; "2" is: history 3x -> 3, own once -> 5
    assert propose(d2) == ([3], [0.75])


def test_siblings_off_by_default_and_on_for_later_requests():
    for siblings in (False, True):
        d = make_drafter("suffix", siblings=siblings)
        d.start_step(0)
        d.begin(1, 7, [9])
        d.extend(1, [1, 2, 3, 4])
        d.end(1)
        d.begin(2, 7, [9])
        d.extend(2, [1, 2])
        assert propose(d, 2)[0] == ([3, 4] if siblings else []), siblings
        d.end(2)
        # after the step, both rollouts arrive by add_rollout: no double count of the sibling
        d.add_rollout(0, 7, [9], [1, 2, 3, 4])
        d.add_rollout(0, 7, [9], [1, 2, 5])
        d.start_step(1)
        d.begin(3, 7, [9])
        d.extend(3, [1, 2])
        assert propose(d, 3) == ([3, 4], [0.5, 1.0]), siblings


# ---- ngram: crafted --------------------------------------------------------------------------------


def test_ngram_prompt_lookup():
    d = make_drafter("ngram", kmax=3)
    d.begin(1, 0, [1, 2, 3, 9, 1, 2, 4, 4, 7])
    assert propose(d)[0] == []  # 7 never occurred before
    d.extend(1, [1, 2])  # bigram "1 2": earliest occurrence first -> 3 9 1
    toks, probs = propose(d)
    assert toks == [3, 9, 1] and probs == pytest.approx([0.5, 1.0, 1.0])
    d.extend(1, [4])  # bigram "2 4" occurred once -> 4 7 1
    assert propose(d) == ([4, 7, 1], [1.0, 1.0, 1.0])
    d.extend(1, [5, 4])  # bigram "5 4" never: unigram "4" -> earliest 4 at index 6
    assert propose(d)[0] == [4, 7, 1]


def test_ngram_proposal_stops_at_the_end_of_the_text():
    d = make_drafter("ngram", kmax=10)
    d.begin(1, 0, [3, 3])
    assert propose(d) == ([3], [1.0])


# ---- agreement with the references on random small-vocabulary texts -------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_suffix_equals_the_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    checked = nonempty = 0
    for _ in range(12):
        vocab = int(rng.choice([2, 3, 5]))
        params = dict(depth=int(rng.choice([1, 2, 5, 24])), kmax=int(rng.choice([1, 3, 8])),
                      min_prob=float(rng.choice([0.0, 0.1, 0.4])), spec_factor=float(rng.choice([1.0, 3.0])),
                      spec_offset=float(rng.choice([0.0, 1.0])))
        prompt = rng.integers(0, vocab, int(rng.integers(1, 7))).tolist()
        hist = [rng.integers(0, vocab, int(rng.integers(1, 14))).tolist() for _ in range(rng.integers(0, 4))]
        d = with_history(hist, prompt, **params)
        d.begin(1, 7, prompt)
        own = list(prompt)
        for tok in rng.integers(0, vocab, 14).tolist():
            toks, probs = propose(d)
            want_t, want_p = naive_suffix([(prompt[-params["depth"]:], h) for h in hist], own, **params)
            assert toks == want_t and probs == pytest.approx(want_p, rel=1e-6), (hist, own, params)
            checked += 1
            nonempty += bool(toks)
            d.extend(1, [tok])
            own.append(tok)
    assert nonempty > checked // 2


@pytest.mark.parametrize("seed", range(3))
def test_ngram_equals_the_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        params = dict(kmax=int(rng.choice([1, 4, 10])), max_ngram=int(rng.choice([1, 2, 3])))
        d = make_drafter("ngram", **params)
        text = rng.integers(0, 4, int(rng.integers(1, 6))).tolist()
        d.begin(1, 0, text)
        for tok in rng.integers(0, 4, 20).tolist():
            toks, probs = propose(d)
            want_t, want_p = naive_ngram(text, **params)
            assert toks == want_t and probs == pytest.approx(want_p, rel=1e-6)
            d.extend(1, [tok])
            text.append(tok)


# ---- determinism ----------------------------------------------------------------------------------


def _proposals(name: str, hist: list[np.ndarray], order: np.ndarray, prompt: np.ndarray, y: np.ndarray,
               chunks: list[int], every_position: bool) -> dict[int, tuple[list[int], list[float]]]:
    d = make_drafter(name, window=3) if name == "suffix" else make_drafter(name)
    for step in range(3):
        d.start_step(step)
        for i in order:
            if i % 3 == step:
                d.add_rollout(step, 4, prompt, hist[i])
    d.start_step(3)
    d.begin(11, 4, prompt)
    out, t = {0: propose(d, 11)}, 0
    for c in chunks:
        if every_position:  # proposals asked in between must not change anything
            for j in range(c):
                d.extend(11, y[t + j:t + j + 1])
                propose(d, 11)
        else:
            d.extend(11, y[t:t + c])
        t += c
        out[t] = propose(d, 11)
    return out


@pytest.mark.parametrize("name", ["suffix", "ngram"])
def test_proposals_depend_on_content_only(name):
    rng = np.random.default_rng(3)
    phrases = [rng.integers(0, 50, int(rng.integers(2, 9))) for _ in range(12)]

    def text(n: int) -> np.ndarray:
        return np.concatenate([phrases[i] for i in rng.integers(0, 12, n)]).astype(np.int64)

    hist, prompt, y = [text(30) for _ in range(12)], text(4), text(60)
    chunks = []
    while sum(chunks) < len(y):
        chunks.append(min(int(rng.integers(1, 6)), len(y) - sum(chunks)))
    base = _proposals(name, hist, np.arange(12), prompt, y, [1] * len(y), every_position=False)
    other = _proposals(name, hist, rng.permutation(12), prompt, y, chunks, every_position=True)
    assert other and all(other[t] == base[t] for t in other)
    assert sum(bool(p[0]) for p in other.values()) > len(other) // 2


def test_rebuilt_history_index_answers_the_same():
    """The per-prompt index is a cache: dropping it (another start_step, LRU) changes nothing."""
    d = with_history([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4]], prompt=[9])
    a = d.history_index(7)
    d._cache.clear()
    b = d.history_index(7)
    assert a is not b
    for sam in (a, b):
        v, n = sam.match([9, 1, 2, 3], 24)
        assert n == 4 and sam.path(v)[0].tolist() == [4]
