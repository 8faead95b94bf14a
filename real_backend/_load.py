"""Where a model's weights come from: SmolLM2-135M's GGUF (trained), a local Hugging Face checkpoint
folder (trained: real_backend/_hf.py), or a shape of ``MODEL_SHAPES`` / a checkpoint's config with
random weights (timing needs no trained weights). The model itself is real_backend/_model.py.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from specroll.core.errors import SpecrollError
from specroll.real_backend._model import SMOLLM, ModelConfig, Transformer, _rope_tables

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise SpecrollError(f"unknown dtype '{dtype}'", field="dtype", fix=f"use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def model_names() -> list[str]:
    from specroll.core.shapes import MODEL_SHAPES

    return list(MODEL_SHAPES.names())


def load_model(name: str = SMOLLM, device: str = "cpu", dtype: str = "float32",
               random_weights: bool = False, seed: int = 0, max_ctx: int | None = None) -> Transformer:
    """SmolLM2-135M-Instruct from its GGUF, a Hugging Face checkpoint folder (``name`` = its path:
    Llama, Qwen2, Qwen3), or, with ``random_weights=True``, any shape of MODEL_SHAPES or a
    checkpoint's architecture with random weights (for timing)."""
    from specroll.core.shapes import MODEL_SHAPES
    from specroll.real_backend._hf import is_checkpoint, read_config, read_weights

    tdtype = torch_dtype(dtype)
    if is_checkpoint(name):
        cfg = read_config(name)
        cfg = replace(cfg, max_ctx=int(max_ctx)) if max_ctx is not None else cfg
        if random_weights:
            return _random_model(cfg, device, tdtype, seed)
        return _assemble(cfg, read_weights(name, cfg, tdtype), device, tdtype)
    if name not in MODEL_SHAPES.names():
        raise SpecrollError(f"unknown model '{name}'", field="model",
                            fix=f"use one of {', '.join(MODEL_SHAPES.names())}, or the path of a "
                                "checkpoint folder (config.json, *.safetensors)")
    if random_weights:
        cfg = ModelConfig.from_shape(name)
        if name == SMOLLM:
            cfg = replace(cfg, rope_theta=100_000.0, max_ctx=8192, eos_ids=(2,))
        if max_ctx is not None:
            cfg = replace(cfg, max_ctx=int(max_ctx))
        return _random_model(cfg, device, tdtype, seed)
    if name != SMOLLM:
        raise SpecrollError(f"no trained weights ship for '{name}'", field="model",
                            fix=f"use {SMOLLM} or a checkpoint folder, or random_weights=True for timing")
    from specroll.real_backend._gguf import read_gguf

    meta, w = read_gguf()
    cfg = ModelConfig(name=SMOLLM, n_layers=meta["n_layers"], d_model=meta["d_model"],
                      n_heads=meta["n_heads"], n_kv_heads=meta["n_kv_heads"],
                      head_dim=meta["d_model"] // meta["n_heads"], d_ff=meta["d_ff"],
                      vocab_size=meta["vocab_size"], tied_embeddings="output.weight" not in w,
                      rope_theta=meta["rope_theta"], rms_eps=meta["rms_eps"],
                      max_ctx=int(max_ctx or meta["context_length"]), eos_ids=(int(meta["eos_token_id"]),))
    return _assemble(cfg, _gguf_state_dict(w, cfg), device, tdtype)


def load_tokenizer(name: str = SMOLLM) -> Any:
    """The tokenizer of ``name``: SmolLM2's (rebuilt from its GGUF) or a checkpoint folder's own."""
    from specroll.real_backend._hf import is_checkpoint, read_tokenizer
    from specroll.real_backend._tokenizer import load_tokenizer as smollm_tokenizer

    return read_tokenizer(name) if is_checkpoint(name) else smollm_tokenizer(name)


def _assemble(cfg: ModelConfig, sd: dict[str, torch.Tensor], device: str, dtype: torch.dtype) -> Transformer:
    """The model holding exactly these weights (every parameter named once: strict)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    model.load_state_dict(sd, strict=True, assign=True)
    # The RoPE tables were built on the meta device: build them for real.
    model.rope_cos, model.rope_sin = _rope_tables(cfg)
    return model.to(device=device, dtype=dtype).eval()


def _random_model(cfg: ModelConfig, device: str, dtype: torch.dtype, seed: int) -> Transformer:
    # Built on the meta device, then allocated uninitialized: nn.Linear's own initialization of
    # billions of weights would cost more than ours.
    with torch.device("meta"):
        model = Transformer(cfg).to(dtype)
    model.to_empty(device=device)
    model.rope_cos, model.rope_sin = (t.to(device) for t in _rope_tables(cfg))
    _random_init(model, seed)
    return model.eval()


def _gguf_state_dict(w: dict, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    # Arrays read from the cache are read-only views of file bytes: the model owns writable copies
    # (rollouts perturb weights in place). torch.cat below copies the fused ones anyway.
    fused = ("attn_q.", "attn_k.", "attn_v.", "ffn_gate.", "ffn_up.")
    t = {k: torch.from_numpy(v if any(f in k for f in fused) or v.flags.writeable else v.copy())
         for k, v in w.items()}
    sd = {"tok_emb.weight": t["token_embd.weight"], "norm.weight": t["output_norm.weight"]}
    if "output.weight" in t:
        sd["lm_head.weight"] = t["output.weight"]
    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        sd[f"layers.{i}.attn_norm.weight"] = t[p + "attn_norm.weight"]
        sd[f"layers.{i}.wqkv.weight"] = torch.cat([t[p + "attn_q.weight"], t[p + "attn_k.weight"],
                                                   t[p + "attn_v.weight"]])
        sd[f"layers.{i}.wo.weight"] = t[p + "attn_output.weight"]
        sd[f"layers.{i}.ffn_norm.weight"] = t[p + "ffn_norm.weight"]
        sd[f"layers.{i}.w13.weight"] = torch.cat([t[p + "ffn_gate.weight"], t[p + "ffn_up.weight"]])
        sd[f"layers.{i}.w2.weight"] = t[p + "ffn_down.weight"]
    return sd


def _random_init(model: Transformer, seed: int) -> None:
    """Weights of standard deviation 0.02 (0.02 / sqrt(2 n_layers) on output projections, keeping
    activations tame), unit norms. Uniform rather than normal: same variance, several times faster
    to draw for billions of weights; drawn on the model's device from a seeded generator."""
    dev = model.tok_emb.weight.device
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                std = 0.02 / math.sqrt(2 * model.cfg.n_layers) if name.endswith(("wo.weight", "w2.weight")) \
                    else 0.02
                half_width = std * math.sqrt(3.0)
                p.uniform_(-half_width, half_width, generator=gen)
