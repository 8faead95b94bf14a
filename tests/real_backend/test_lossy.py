"""Acceptance rules: decisions on crafted logits, the exact reduction at lenience 1, lossy accounting
checked against a teacher-forced replay, and the lossy marks of the rollout files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from specroll.cli import main
from specroll.core.errors import SpecrollError
from specroll.real_backend import RolloutConfig, make_accept_rule, rollout
from specroll.real_backend._lossy import Verify
from specroll.real_backend._sampling import keyed_sample, keyed_uniform
from specroll.real_backend._toy import ToyLM

BASE = dict(model="toy", prompts=3, samples=2, steps=3, max_new_tokens=40, max_batch=4, seed=5,
            temperature=0.8, policy="fixed", params={"k": 4}, drafter="prevrollout")


def verify(logits, drafts, k=None, temperature=1.0, top_p=1.0, seed=3):
    """A Verify of n rows x q positions with the target's keyed samples."""
    logits = torch.as_tensor(logits, dtype=torch.float32)
    n, q, _ = logits.shape
    keys = np.arange(n, dtype=np.int64) + 100
    pos = np.tile(np.arange(q), (n, 1))
    target = keyed_sample(logits, seed, torch.as_tensor(keys), torch.as_tensor(pos), temperature,
                          top_p).numpy()
    drafts = np.asarray(drafts, dtype=np.int64)
    k = np.full(n, drafts.shape[1]) if k is None else np.asarray(k)
    return Verify(logits, drafts, target, k, keys, pos, seed, temperature, top_p)


def random_verify(n=400, q=5, vocab=12, seed=0, temperature=1.0, top_p=1.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, q, vocab, generator=g) * 2
    drafts = torch.randint(0, vocab, (n, q - 1), generator=g).numpy()
    return verify(logits, drafts, temperature=temperature, top_p=top_p)


# ---- rules on crafted states -----------------------------------------------------------------------


def test_exact_accepts_the_target_samples_only():
    v = random_verify()
    ok = make_accept_rule("exact").accept(v)
    assert np.array_equal(ok, v.drafts == v.target[:, :-1])
    assert ok.any() and not ok.all()


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_lenience_one_is_the_exact_rule(temperature, top_p):
    v = random_verify(temperature=temperature, top_p=top_p)
    rule = make_accept_rule("lenient", lenience=1.0)
    assert not rule.is_lossy and not rule.to_dict()["lossy"]
    assert np.array_equal(rule.accept(v), make_accept_rule("exact").accept(v))


def test_lenience_widens_the_accepted_set_and_rate_matches_min_one_l_p():
    v = random_verify(n=3000, q=2, vocab=6, seed=1)
    sets = [make_accept_rule("lenient", lenience=l_).accept(v)[:, 0] for l_ in (1.0, 1.5, 3.0)]
    assert (sets[0] <= sets[1]).all() and (sets[1] <= sets[2]).all() and sets[2].sum() > sets[0].sum()
    # acceptance probability of a fixed draft token x is min(1, l p(x)): compare in aggregate
    p = torch.softmax(v.logits[:, 0], dim=-1).numpy()
    px = p[np.arange(len(p)), v.drafts[:, 0]]
    for l_, got in zip((1.0, 1.5, 3.0), sets):
        want = np.minimum(1.0, l_ * px)
        assert abs(got.mean() - want.mean()) < 4 * np.sqrt(want.mean() / len(want)), l_


def test_lenient_uses_the_samplers_own_uniform():
    """With p(x) = 0.3 next to y's interval, l = 2 widens x's interval by 0.15 on each side."""
    logits = torch.log(torch.tensor([[[0.2, 0.3, 0.5]]]))
    rule = make_accept_rule("lenient", lenience=2.0)
    hits = []
    for seed in range(200):
        v = verify(logits, [[1]], seed=seed)
        u = float(keyed_uniform(seed, torch.tensor([100]), torch.tensor([[0]]))[0, 0])
        assert (v.target[0, 0] == 1) == (0.2 < u <= 0.5)
        assert bool(rule.accept(v)[0, 0]) == (0.05 <= u <= 0.65)
        hits.append(bool(rule.accept(v)[0, 0]))
    assert 0.45 < np.mean(hits) < 0.75


def test_judge_accepts_top_k_tokens_close_enough_to_the_target():
    # position probabilities (T = 1): token 0: 0.5, 1: 0.3, 2: 0.15, 3: 0.05
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = torch.log(probs)[None, None, :].repeat(4, 2, 1)
    drafts = [[1], [2], [3], [0]]
    v = verify(logits, drafts)
    v.target[:, 0] = 0                      # the target sampled token 0 in every row (crafted)
    ok = make_accept_rule("judge", top_k=3, tau=0.5).accept(v)[:, 0]
    # 1: rank 1 and 0.3 >= 0.25: yes; 2: 0.15 < 0.25: no; 3: rank 3 (not top 3): no; 0: the target's
    assert ok.tolist() == [True, False, False, True]
    ok = make_accept_rule("judge", top_k=4, tau=0.2).accept(v)[:, 0]
    assert ok.tolist() == [True, True, False, True]   # 2: 0.15 >= 0.1 now; 3: 0.05 < 0.1


def test_judge_reads_softmax_at_greedy():
    logits = torch.log(torch.tensor([0.6, 0.4]))[None, None, :]
    v = verify(logits, [[1]], temperature=0.0)
    assert v.target[0, 0] == 0
    assert make_accept_rule("judge", top_k=2, tau=0.5).accept(v)[0, 0]
    assert not make_accept_rule("lenient", lenience=5).accept(v)[0, 0]   # point mass at T = 0


def test_ead_accepts_every_draft_and_carries_the_stop():
    rule = make_accept_rule("ead", threshold=1.5, window=3)
    v = random_verify(n=5)
    assert rule.accept(v).all() and rule.is_lossy
    assert rule.draft_stop == {"threshold": 1.5, "window": 3}
    assert make_accept_rule("judge").draft_stop is None


@pytest.mark.parametrize("name, params, needle", [
    ("nope", {}, "unknown accept rule"),
    ("lenient", {"lenience": 0.5}, "lenience"),
    ("lenient", {"l": 2}, "no parameter"),
    ("judge", {"top_k": 0}, "top_k"),
    ("judge", {"tau": 2}, "tau"),
    ("ead", {"window": 0}, "window"),
    ("ead", {"threshold": -1}, "threshold"),
])
def test_bad_rules(name, params, needle):
    with pytest.raises(SpecrollError, match=needle):
        make_accept_rule(name, **params)


# ---- the engine: lossless at l = 1, lossy accounting exact ----------------------------------------------


def tokens(res):
    return res.trace.table.column("token_ids").to_pylist()


def teacher_forced_mismatches(res, seed, temperature) -> int:
    """Re-run the toy model over each rollout's prompt + response in one forward and count response
    positions whose token differs from the target's keyed sample after that exact prefix."""
    model = ToyLM(seed=seed)
    total = 0
    tr = res.trace
    n_prompts, samples = BASE["prompts"], BASE["samples"]
    prompts = tr.table.column("prompt_token_ids").to_pylist()
    for i, y in enumerate(tokens(res)):
        s, p, g = int(tr.column("step")[i]), int(tr.column("prompt_id")[i]), int(tr.column("sample")[i])
        key = s * n_prompts * samples + p * samples + g
        seq = prompts[i] + y
        cache = model.make_cache(1, len(seq) + 1)
        logits = model(torch.tensor([seq]), torch.tensor([0]), torch.tensor([0]), cache)
        lp = len(prompts[i])
        want = keyed_sample(logits[:, lp - 1:lp - 1 + len(y)], seed, torch.tensor([key]),
                            torch.arange(len(y))[None, :], temperature)[0].tolist()
        total += sum(a != b for a, b in zip(y, want))
    return total


def test_lenience_one_equals_ar_and_exact():
    ar = rollout(RolloutConfig(**{**BASE, "policy": "ar", "params": {}}))
    for accept, params in (("exact", {}), ("lenient", {"lenience": 1})):
        res = rollout(RolloutConfig(**BASE, accept=accept, accept_params=params))
        assert tokens(res) == tokens(ar), accept
        assert res.summary["lossy_tokens"] == 0 and not res.summary["lossy"]
        assert res.trace.meta.extra["lossy"] is False


@pytest.mark.parametrize("accept, params", [("lenient", {"lenience": 4.0}),
                                            ("judge", {"top_k": 3, "tau": 0.3})])
def test_lossy_tokens_are_the_teacher_forced_mismatches(accept, params):
    exact = rollout(RolloutConfig(**BASE))
    res = rollout(RolloutConfig(**BASE, accept=accept, accept_params=params))
    s = res.summary
    assert s["lossy"] and s["lossy_tokens"] > 0
    assert s["lossy_tokens"] == teacher_forced_mismatches(res, BASE["seed"], BASE["temperature"])
    assert s["lossy_fraction"] == pytest.approx(s["lossy_tokens"] / s["tokens"])
    assert sum(st["lossy_tokens"] for st in s["steps"]) == s["lossy_tokens"]
    assert sum(d["lossy"] for d in res.decisions) == s["lossy_tokens"]
    assert res.summary["accepted"] > exact.summary["accepted"]      # it accepts more than exact
    assert teacher_forced_mismatches(exact, BASE["seed"], BASE["temperature"]) == 0
    meta = res.trace.meta.extra
    assert meta["lossy"] is True and meta["accept"]["rule"] == accept


def test_cli_accept_options_write_lossy_files(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["rollout", "--model", "toy", "--policy", "fixed", "--param", "k=3",
                 "--drafter", "prevrollout", "--accept", "lenient", "--accept-param", "lenience=3",
                 "--prompts", "2", "--samples", "2",
                 "--steps", "2", "--max-new-tokens", "30", "--max-batch", "3", "--seed", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lossy"] and "LOSSY" in printed
    import pyarrow.parquet as pq
    it = pq.read_table(out / "iterations.parquet").to_pydict()
    assert sum(it["lossy_tokens"]) == summary["lossy_tokens"]
    from specroll.traces import read_trace
    assert read_trace(out / "trace.parquet").meta.extra["lossy"] is True


@pytest.mark.parametrize("cfg, needle", [
    (dict(accept="ead"), "needs a model drafter"),
    (dict(drafter="stand", accept="judge"), "tree drafters are verified exactly"),
    (dict(accept="lenient", accept_params={"lenience": 0}), "lenience"),
])
def test_bad_rollout_combinations(cfg, needle):
    with pytest.raises(SpecrollError, match=needle):
        rollout(RolloutConfig(**{**BASE, **cfg}))
