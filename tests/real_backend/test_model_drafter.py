"""The layerskip model drafter and the partial-layer forward on a tiny random Llama: the early exit
is the truncated model sharing the target's KV, drafting is lossless under the exact rule, and the
entropy-adaptive mode's lossy tokens are exactly the teacher-forced mismatches."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from specroll.core.errors import SpecrollError
from specroll.policies import make_policy
from specroll.real_backend import Engine, KVCache, LayerSkipDrafter, ToyLM, Transformer, make_accept_rule
from specroll.real_backend._sampling import keyed_sample
from specroll.real_backend._workload import RolloutRequest
from tests.real_backend.test_model_common import TINY, tiny_model

CFG = replace(TINY, n_layers=4, max_ctx=160)


def truncated(model: Transformer, n: int) -> Transformer:
    """A real n-layer model with the same weights as the first n layers of ``model``."""
    small = Transformer(replace(model.cfg, n_layers=n))
    sd = {k: v for k, v in model.state_dict().items()
          if not k.startswith("layers.") or int(k.split(".")[1]) < n}
    small.load_state_dict(sd, strict=False)
    small.rope_cos, small.rope_sin = model.rope_cos, model.rope_sin
    return small.eval()


def requests(n: int = 5, seed: int = 0) -> list[RolloutRequest]:
    rng = np.random.default_rng(seed)
    return [RolloutRequest(i, 0, i // 2, i % 2,
                           tuple(int(t) for t in rng.integers(3, 100, rng.integers(3, 9)))) for i in range(n)]


def engine(model, accept=None, temperature=0.7, max_new=30, kmax=4):
    cache = KVCache(model.cfg, 3, 9 + max_new + kmax + 1)
    return Engine(model, cache, max_batch=3, max_new_tokens=max_new, eos_ids=[1], seed=4,
                  temperature=temperature, accept=accept)


def test_partial_forward_is_the_truncated_model_over_the_shared_cache():
    model = tiny_model(2, CFG)
    small = truncated(model, 2)
    prompt = torch.tensor([[5, 9, 13, 2, 7, 11, 3]])
    big_cache, small_cache = KVCache(CFG, 1, 64), KVCache(small.cfg, 1, 64)
    model(prompt, torch.tensor([0]), torch.tensor([0]), big_cache)     # the target's prefill
    small(prompt, torch.tensor([0]), torch.tensor([0]), small_cache)
    assert torch.equal(big_cache.k[:2, :, :, :7], small_cache.k[:, :, :, :7])
    nxt = torch.tensor([[42, 17]])
    a = model(nxt, torch.tensor([0]), torch.tensor([7]), big_cache, n_layers=2)
    b = small(nxt, torch.tensor([0]), torch.tensor([7]), small_cache)
    assert torch.equal(a, b)
    assert not torch.equal(a, model(nxt, torch.tensor([0]), torch.tensor([7]), big_cache))


def test_drafts_are_the_early_exits_own_greedy_continuation():
    model = tiny_model(3, CFG)
    small = truncated(model, 3)
    eng = engine(model, temperature=0.0)
    d = LayerSkipDrafter(model, layers=3, kmax=4)
    d.bind(eng)
    prompt = [5, 9, 13, 2, 7]
    model(torch.tensor([prompt]), torch.tensor([1]), torch.tensor([0]), eng.cache)
    toks, probs, lens = d.draft([0], np.array([8]), np.array([1]), np.array([5]), np.array([0]),
                                np.array([1]), np.array([3]))
    seq = prompt + [8]
    for _ in range(3):  # the truncated model decoding greedily on its own cache
        c = KVCache(small.cfg, 1, 64)
        seq.append(int(small(torch.tensor([seq]), torch.tensor([0]), torch.tensor([0]), c)[0, -1].argmax()))
    assert lens.tolist() == [3] and toks[0].tolist() == seq[6:]
    assert ((probs > 0) & (probs <= 1)).all()


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_layerskip_drafting_equals_ar(temperature):
    model = tiny_model(4, CFG)
    ar = engine(model, temperature=temperature).run_step(requests(), make_policy("ar"),
                                                         LayerSkipDrafter(model, 3, kmax=4))
    drafter = LayerSkipDrafter(model, 3, kmax=4)
    spec = engine(model, temperature=temperature).run_step(requests(), make_policy("fixed", k=3), drafter)
    assert [r.tokens for r in spec.rollouts] == [r.tokens for r in ar.rollouts]
    dec = [r for r in spec.iterations if r["phase"] == "decode"]
    assert sum(r["drafted"] for r in dec) > 0 and drafter.stats["forwards"] > 0
    assert sum(r["lossy_tokens"] for r in dec) == 0
    assert all(r["draft_wall_s"] >= 0 for r in dec)


def teacher_forced(model, out, temperature):
    """Lossy count of each rollout: tokens differing from the target's keyed sample after that prefix."""
    total = 0
    for r in out.rollouts:
        seq = list(r.request.prompt_tokens) + r.tokens
        c = KVCache(model.cfg, 1, len(seq) + 1)
        logits = model(torch.tensor([seq]), torch.tensor([0]), torch.tensor([0]), c)
        lp = len(r.request.prompt_tokens)
        want = keyed_sample(logits[:, lp - 1:lp - 1 + len(r.tokens)], 4, torch.tensor([r.request.key]),
                            torch.arange(len(r.tokens))[None, :], temperature)[0].tolist()
        total += sum(a != b for a, b in zip(r.tokens, want))
    return total


def test_entropy_adaptive_counts_its_lossy_tokens_and_zero_threshold_is_ar():
    model = tiny_model(5, CFG)
    ar = engine(model).run_step(requests(), make_policy("ar"), LayerSkipDrafter(model, 2, kmax=4))
    off = engine(model, accept=make_accept_rule("ead", threshold=0.0, window=1)).run_step(
        requests(), make_policy("fixed", k=4), LayerSkipDrafter(model, 2, kmax=4))
    assert [r.tokens for r in off.rollouts] == [r.tokens for r in ar.rollouts]   # never below 0 bits
    assert sum(r["drafted"] for r in off.iterations) == 0
    on = engine(model, accept=make_accept_rule("ead", threshold=99.0, window=2)).run_step(
        requests(), make_policy("fixed", k=4), LayerSkipDrafter(model, 2, kmax=4))
    lossy = sum(r["lossy_tokens"] for r in on.iterations)
    assert lossy > 0 and lossy == teacher_forced(model, on, 0.7)
    assert sum(d["lossy"] for d in on.decisions) == lossy
    dec = [r for r in on.iterations if r["phase"] == "decode"]
    assert sum(r["accepted"] for r in dec) == sum(r["drafted"] for r in dec)     # nothing rejected


def test_entropy_stop_reads_the_rolling_mean():
    model = tiny_model(6, CFG)
    eng = engine(model)
    # a threshold between the early exit's entropies: some positions stop, some draft
    d = LayerSkipDrafter(model, 2, kmax=6)
    d.bind(eng)
    d.begin(0, 0, [1])
    model(torch.tensor([[5, 9, 13, 2, 7]]), torch.tensor([0]), torch.tensor([0]), eng.cache)
    toks, _, lens = d.draft([0], np.array([8]), np.array([0]), np.array([5]), np.array([0]), np.array([1]),
                            np.array([6]), stop={"threshold": 99.0, "window": 3})
    assert lens[0] == 6 and len(d._entropy[0]) == 3      # the window keeps the last 3 entropies
    ent = list(d._entropy[0])
    d2 = LayerSkipDrafter(model, 2, kmax=6)
    d2.bind(eng)
    d2.begin(0, 0, [1])
    _, _, lens2 = d2.draft([0], np.array([8]), np.array([0]), np.array([5]), np.array([0]), np.array([1]),
                           np.array([6]), stop={"threshold": min(ent) - 1e-3, "window": 1})
    assert lens2[0] < 6


def test_layerskip_bad_inputs():
    model = tiny_model(0, CFG)
    for layers in (0, 4, 2.5):
        with pytest.raises(SpecrollError, match="layers"):
            LayerSkipDrafter(model, layers)
    with pytest.raises(SpecrollError, match="layered Transformer"):
        LayerSkipDrafter(ToyLM(), 1)
    with pytest.raises(SpecrollError, match="kmax"):
        LayerSkipDrafter(model, 2, kmax=0)
    with pytest.raises(SpecrollError, match="batches"):
        LayerSkipDrafter(model, 2).propose(0)
    meta = LayerSkipDrafter(model, 3, kmax=5).to_meta()
    assert meta["layer_fraction"] == 0.75 and meta["kmax"] == 5
