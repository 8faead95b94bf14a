"""The packed CPU linear kernel: batch-invariant by construction, equal to the BLAS up to rounding,
re-packed when a weight changes, and the model falls back to the BLAS path without it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from specroll.real_backend import KVCache, _cpu_kernel
from specroll.real_backend._model import ModelConfig, Transformer

pytestmark = pytest.mark.skipif(not _cpu_kernel.available(), reason="no C++ compiler or no AVX-512 here")


@pytest.mark.parametrize("n", [64, 70, 1000])
def test_a_rows_bits_never_depend_on_the_other_rows_or_threads(n):
    g = torch.Generator().manual_seed(n)
    w, x = torch.randn(n, 96, generator=g), torch.randn(40, 96, generator=g)
    packed = _cpu_kernel.pack(w)
    full = _cpu_kernel.linear(x, packed, n)
    saved = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for m in (1, 2, 3, 4, 5, 11, 12, 13, 25, 40):
                for lo in (0, 40 - m):  # the rows as a prefix and as a suffix of the batch
                    assert torch.equal(_cpu_kernel.linear(x[lo:lo + m], packed, n), full[lo:lo + m]), (m, lo)
    finally:
        torch.set_num_threads(saved)
    ref = F.linear(x.double(), w.double())
    assert (full.double() - ref).abs().max() < 1e-4
    assert not torch.equal(full, torch.zeros_like(full))


def test_bias_and_leading_dimensions():
    g = torch.Generator().manual_seed(1)
    lin = torch.nn.Linear(48, 33)
    x = torch.randn(2, 3, 48, generator=g)
    out = _cpu_kernel.PackedWeights()(x, lin.weight, lin.bias)
    assert out.shape == (2, 3, 33)
    torch.testing.assert_close(out, lin(x).detach(), atol=1e-5, rtol=1e-5)


def test_packs_are_remade_when_a_weight_is_written():
    w = torch.randn(40, 32)
    packs = _cpu_kernel.PackedWeights()
    x = torch.randn(3, 32)
    before = packs(x, w)
    with torch.no_grad():
        w.mul_(2.0)
    torch.testing.assert_close(packs(x, w), 2.0 * before)


def toy_model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig("tiny", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16,
                                   d_ff=96, vocab_size=100, max_ctx=128, qkv_bias=True)).eval()


def _logits(model):
    cache = KVCache(model.cfg, 2, 64)
    tokens = torch.randint(0, model.cfg.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return model(tokens, torch.tensor([1, 0]), torch.tensor([0, 0]), cache)


def test_the_model_runs_on_the_kernel_and_agrees_with_the_blas_path():
    model = toy_model()
    assert model._packs() is not None
    ours = _logits(model)
    model.cpu_kernel = False
    assert model._packs() is None
    torch.testing.assert_close(ours, _logits(model), atol=1e-4, rtol=1e-4)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setattr(_cpu_kernel, "_lib", False)
    monkeypatch.setenv("SPECROLL_CPU_KERNEL", "0")
    assert not _cpu_kernel.available()
    assert toy_model()._packs() is None
    with pytest.raises(RuntimeError, match="not available"):
        _cpu_kernel.pack(torch.ones(2, 2))


@pytest.mark.parametrize("kernel", [True, False])
def test_last_returns_the_same_bits_as_the_full_logits_at_those_columns(kernel):
    model = toy_model()
    model.cpu_kernel = kernel
    tokens = torch.randint(0, 100, (3, 7), generator=torch.Generator().manual_seed(2))
    last = torch.tensor([6, 2, 4])
    slots, start = torch.tensor([0, 1, 2]), torch.zeros(3, dtype=torch.int64)
    with torch.inference_mode():
        full = model(tokens, slots, start, KVCache(model.cfg, 3, 64))
        some = model(tokens, slots, start, KVCache(model.cfg, 3, 64), last=last)
    assert some.shape == (3, 1, 100)
    assert torch.equal(some[:, 0], full[torch.arange(3), last])
