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


@pytest.mark.parametrize("n_slots, slots, aligned, bucket", [
    (6, [3, 0, 4], True, 5),    # dense slots: rows placed at their slots, the cache read as a view
    (6, [2, 0, 1], True, 4),
    (11, [9, 0, 5], False, 4),  # scattered: rows 0..2 gather their K/V
])
def test_padded_bucketed_forward_equals_the_plain_forward_and_spares_real_slots(n_slots, slots, aligned,
                                                                                 bucket):
    model = tiny_model(5)
    g = torch.Generator().manual_seed(4)
    cache_a, cache_b = KVCache(TINY, n_slots, 64), KVCache(TINY, n_slots, 64)
    pool = GraphPool(model, cache_b, max_q=4, ctx_buckets=(16, 32, 64))
    slots = torch.tensor(slots)
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
    # Three distinct (bucket, Q, ctx 16|32) graphs of the expected layout.
    assert {(k.batch, k.aligned) for k in pool.graphs} == {(bucket, aligned)}
    assert {k.q for k in pool.graphs} == {1, 2, 3}
    for s in slots.tolist():  # the requests' K/V are the plain forward's
        torch.testing.assert_close(cache_b.k[:, s, :, :18], cache_a.k[:, s, :, :18])
    free = [s for s in range(n_slots - 1) if s not in slots.tolist()]
    assert cache_b.k[:, free].abs().sum() == 0  # padding wrote only into the scratch slot
    assert cache_b.k[:, n_slots - 1].abs().sum() > 0


def test_layout_choice():
    pool = GraphPool(tiny_model(), KVCache(TINY, 33, 64), ctx_buckets=(64,))
    assert pool.key(3, 1, 10, [0, 1, 2]) == GraphKey(4, 1, 64, aligned=True)
    assert pool.key(8, 2, 10, [7, 6, 5, 4, 3, 2, 1, 0]) == GraphKey(8, 2, 64, aligned=True)
    assert pool.key(4, 1, 10, [0, 1, 2, 5]) == GraphKey(8, 1, 64, aligned=True)  # span 8 <= 2 x 4
    assert pool.key(4, 1, 10, [0, 1, 2, 13]) == GraphKey(4, 1, 64)  # span 16 > 2 x 4: gather
    assert pool.key(2, 1, 10, [0, 31]) == GraphKey(2, 1, 64)       # two rows far apart: gather
    assert pool.key(2, 1, 10) == GraphKey(2, 1, 64)                # slots unknown: gather
