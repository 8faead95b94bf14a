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
