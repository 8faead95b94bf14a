"""The CUDA-graph step pool's bucketing, padding and scratch-slot logic, run eagerly on the CPU."""

from __future__ import annotations

import pytest
import torch

from specroll.real_backend import KVCache
from specroll.real_backend._graphs import (
    GraphKey,
    GraphPool,
    bucket_up,
    default_batch_buckets,
    default_ctx_buckets,
)

from .test_model_common import TINY, tiny_model


def test_buckets():
    assert default_batch_buckets(16) == (1, 2, 4, 8, 16)
    assert default_batch_buckets(20) == (1, 2, 4, 8, 16, 20)
    assert default_batch_buckets(1) == (1,)
    assert default_batch_buckets(128)[-4:] == (56, 64, 96, 128)
    assert default_ctx_buckets(1000) == (128, 256, 512, 1000)
    assert default_ctx_buckets(64) == (64,)
    assert bucket_up(5, (1, 2, 4, 8)) == 8 and bucket_up(4, (1, 2, 4, 8)) == 4
    with pytest.raises(ValueError):
        bucket_up(9, (1, 2, 4, 8))


def test_key_selection():
    cache = KVCache(TINY, 9, 64)
    pool = GraphPool(tiny_model(), cache, max_q=5, ctx_buckets=(16, 32, 64))
    assert pool.max_batch == 8 and pool.scratch_slot == 8
    assert pool.key(3, 1, 10) == GraphKey(4, 1, 16)
    assert pool.key(8, 5, 17) == GraphKey(8, 5, 32)
    assert pool.key(1, 6, 10) is None      # prefill-sized query: eager
    with pytest.raises(ValueError, match="scratch"):
        GraphPool(tiny_model(), cache, max_batch=9)


def test_padded_bucketed_forward_equals_the_plain_forward_and_spares_real_slots():
    model = tiny_model(5)
    g = torch.Generator().manual_seed(4)
    cache_a, cache_b = KVCache(TINY, 6, 64), KVCache(TINY, 6, 64)
    pool = GraphPool(model, cache_b, max_q=4, ctx_buckets=(16, 32, 64))
    slots = torch.tensor([3, 0, 4])
    with torch.inference_mode():
        prompts = torch.randint(0, TINY.vocab_size, (3, 12), generator=g)
        for cache in (cache_a, cache_b):  # prefill both caches identically (eager: Q > max_q)
            model(prompts, slots, torch.zeros(3, dtype=torch.int64), cache)
        start = torch.tensor([12, 12, 12])
        for step, q in enumerate((1, 3, 2)):
            tokens = torch.randint(0, TINY.vocab_size, (3, q), generator=g)
            ref = model(tokens, slots, start, cache_a)
            out = pool(tokens, slots, start)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
            assert out.shape == (3, q, TINY.vocab_size)
            start = start + torch.tensor([1, q, 1 + step])
    # Three distinct (batch 4, Q, ctx 16|32) graphs; padding wrote only to the scratch slot.
    assert {k.batch for k in pool.graphs} == {4} and {k.q for k in pool.graphs} == {1, 2, 3}
    for s in (0, 3, 4):
        torch.testing.assert_close(cache_b.k[:, s, :, :12], cache_a.k[:, s, :, :12])
    assert cache_b.k[:, 1:3].abs().sum() == 0  # untouched free slots
    assert cache_b.k[:, pool.scratch_slot].abs().sum() > 0  # the padded row wrote to the scratch slot
