"""compute_match_lengths: m_t and conf rows against a naive replay, columns and metadata, row-order
independence, bad inputs, and `specroll trace match` end to end."""

from __future__ import annotations

import numpy as np
import pytest

from specroll.cli import main
from specroll.core.errors import SpecrollError
from specroll.policies import compute_match_lengths
from specroll.traces import Trace, TraceMeta, read_trace, write_trace
from tests.policies.test_drafters import naive_ngram, naive_suffix


def small_trace(seed: int = 0, steps: int = 3, prompts: int = 2, samples: int = 3, vocab: int = 4,
                tokens: bool = True) -> Trace:
    """Rollouts of a few prompts over a few steps; each prompt's responses share a base text."""
    rng = np.random.default_rng(seed)
    base = {p: rng.integers(0, vocab, 30) for p in range(prompts)}
    prompt = {p: rng.integers(0, vocab, int(rng.integers(2, 6))) for p in range(prompts)}
    rows = []
    for s in range(steps):
        for p in range(prompts):
            for g in range(samples):
                y = base[p][:int(rng.integers(3, 30))].copy()
                flip = rng.random(len(y)) < 0.2
                y[flip] = rng.integers(0, vocab, int(flip.sum()))
                rows.append((s, p, g, prompt[p], y))
    cols = {"step": [r[0] for r in rows], "prompt_id": [r[1] for r in rows], "sample": [r[2] for r in rows],
            "prompt_len": [len(r[3]) for r in rows], "response_len": [len(r[4]) for r in rows],
            "finished": [True] * len(rows)}
    cols = {k: np.asarray(v) for k, v in cols.items()}
    if tokens:
        cols["prompt_token_ids"] = [r[3] for r in rows]
        cols["token_ids"] = [r[4] for r in rows]
    return Trace.from_columns(TraceMeta(max_response_len=64, source="test", model="m", temperature=0.7), cols)


def naive_match(trace: Trace, drafter: str, window: int = 4, **params) -> tuple[np.ndarray, np.ndarray]:
    """Per position: m_t and the conf row, from the brute-force proposal of each prefix."""
    kmax = params.get("kmax", 8 if drafter == "suffix" else 10)
    steps, pids = trace.column("step"), trace.column("prompt_id")
    tv, toff = trace.ragged("token_ids")
    pv, poff = trace.ragged("prompt_token_ids")
    match = np.zeros(len(tv), dtype=np.int64)
    conf = np.zeros((len(tv), kmax), dtype=np.float32)
    depth = params.get("depth", 24)
    for row in range(len(trace)):
        prompt = pv[poff[row]:poff[row + 1]].tolist()
        y = tv[toff[row]:toff[row + 1]].tolist()
        visible = [r for r in range(len(trace))
                   if pids[r] == pids[row] and steps[row] - window <= steps[r] < steps[row]]
        hist = [(pv[poff[r]:poff[r + 1]].tolist()[-depth:], tv[toff[r]:toff[r + 1]].tolist())
                for r in visible]
        for t in range(len(y)):
            if drafter == "suffix":
                toks, probs = naive_suffix(hist, prompt + y[:t], **params)
            else:
                toks, probs = naive_ngram(prompt + y[:t], **params)
            m = 0
            while m < len(toks) and t + m < len(y) and toks[m] == y[t + m]:
                m += 1
            match[toff[row] + t] = m
            conf[toff[row] + t, :len(probs)] = probs
    return match, conf


@pytest.mark.parametrize("drafter, params", [
    ("suffix", {}),
    ("suffix", {"window": 1, "depth": 3, "min_prob": 0.3, "kmax": 4}),
    ("ngram", {}),
    ("ngram", {"max_ngram": 3, "kmax": 5}),
])
def test_match_lengths_equal_the_naive_replay(drafter, params):
    trace = small_trace()
    out = compute_match_lengths(trace, drafter, **params)
    window = params.get("window", 4)
    naive = {k: v for k, v in params.items() if k != "window"}
    want_m, want_c = naive_match(trace, drafter, window=window, **naive)
    m, moff = out.ragged(f"match_{drafter}")
    c, coff = out.ragged(f"conf_{drafter}")
    kmax = out.meta.kmax(drafter)
    assert np.array_equal(moff, trace.ragged("token_ids")[1]) and np.array_equal(coff, moff * kmax)
    assert m.dtype == np.int16 and c.dtype == np.float32
    assert np.array_equal(m, want_m)
    assert np.allclose(c.reshape(-1, kmax), want_c, rtol=1e-6)
    assert want_m.sum() > 0  # the replay found matches: a real check, not zeros against zeros


def test_columns_metadata_and_bounds():
    trace = small_trace(seed=1)
    out = compute_match_lengths(trace, "suffix", window=2)
    spec = out.meta.extra["drafters"]["suffix"]
    assert spec["kind"] == "suffix" and spec["kmax"] == 8 and spec["params"]["window"] == 2
    assert out.drafters == ["suffix"] and len(out) == len(trace)
    m, off = out.ragged("match_suffix")
    t = np.arange(len(m)) - np.repeat(off[:-1], np.diff(off))
    remaining = np.repeat(np.diff(off), np.diff(off)) - t
    assert (m >= 0).all() and (m <= 8).all() and (m <= remaining).all()
    conf = out.ragged("conf_suffix")[0].reshape(-1, 8)
    assert ((conf > 0).sum(axis=1) >= m).all()  # m_t <= proposal length
    # step 0 has no history: the first rollouts of a prompt draft from their own text only
    first = out.column("step") == 0
    assert m[np.repeat(first, np.diff(off))].mean() < m[np.repeat(~first, np.diff(off))].mean()


def test_row_order_does_not_matter(tmp_path):
    trace = small_trace(seed=2)
    perm = np.random.default_rng(0).permutation(len(trace))
    shuffled = Trace(trace.table.take(perm), trace.meta)
    a = compute_match_lengths(trace, "suffix")
    b = compute_match_lengths(shuffled, "suffix")
    ma, oa = a.ragged("match_suffix")
    mb, ob = b.ragged("match_suffix")
    for i, j in enumerate(perm):  # row i of b is row j of a
        assert np.array_equal(mb[ob[i]:ob[i + 1]], ma[oa[j]:oa[j + 1]])


def test_written_trace_round_trips(tmp_path):
    out = compute_match_lengths(small_trace(), "ngram")
    write_trace(out, tmp_path / "t.parquet")
    back = read_trace(tmp_path / "t.parquet")
    assert np.array_equal(back.ragged("match_ngram")[0], out.ragged("match_ngram")[0])
    assert back.meta.extra["drafters"] == out.meta.extra["drafters"]


def test_bad_inputs():
    with pytest.raises(SpecrollError, match="token_ids"):
        compute_match_lengths(small_trace(tokens=False), "suffix")
    with pytest.raises(SpecrollError, match="unknown drafter"):
        compute_match_lengths(small_trace(), "eagle")
    with pytest.raises(SpecrollError, match="no parameter"):
        compute_match_lengths(small_trace(), "suffix", windw=3)


def test_cli_trace_match(tmp_path, capsys):
    src, dst = tmp_path / "in.parquet", tmp_path / "out.parquet"
    write_trace(small_trace(), src)
    assert main(["trace", "match", str(src), "--drafter", "suffix", "--window", "2",
                 "--param", "min_prob=0.2", "--out", str(dst)]) == 0
    out = read_trace(dst)
    assert out.meta.extra["drafters"]["suffix"]["params"]["window"] == 2
    assert out.meta.extra["drafters"]["suffix"]["params"]["min_prob"] == 0.2
    want = compute_match_lengths(small_trace(), "suffix", window=2, min_prob=0.2)
    assert np.array_equal(out.ragged("match_suffix")[0], want.ragged("match_suffix")[0])
    # no token ids: one clear error, exit 2, nothing written
    write_trace(small_trace(tokens=False), src)
    capsys.readouterr()
    bad = ["trace", "match", str(src), "--drafter", "suffix", "--out", str(tmp_path / "x.parquet")]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "token_ids" in err and "Traceback" not in err and not (tmp_path / "x.parquet").exists()
