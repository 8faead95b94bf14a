"""Local Hugging Face checkpoint folders of the Llama, Qwen2 and Qwen3 families, read without
transformers and without any download: ``config.json`` -> :class:`ModelConfig`, ``*.safetensors``
-> this backend's fused state dict, ``tokenizer.json`` + the chat template -> :class:`Tokenizer`.

The families differ in three places only (all in the model file): Qwen2 biases Q/K/V, Qwen3
normalizes each head's Q and K (RMSNorm over head_dim) before RoPE, and a Llama config may set
``attention_bias`` (Q/K/V/O biases) or Llama-3.1's "llama3" RoPE scaling. Anything else that would
change the function (sliding windows, MLP biases, another activation, another RoPE scaling) is
refused with a clear error rather than run wrong.

:func:`to_hf_state_dict` / :func:`hf_config` go the other way, so that transformers can run the
very same weights (tests, and the GPU benchmark's transformers baselines).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from specroll.core.errors import SpecrollError
from specroll.real_backend._model import ModelConfig

FAMILIES = ("llama", "qwen2", "qwen3")
_LAYER_KEYS = {  # HF name inside model.layers.{i}. -> our parameter (fused ones are assembled below)
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.o_proj.weight": "wo.weight", "self_attn.o_proj.bias": "wo.bias",
    "self_attn.q_norm.weight": "q_norm.weight", "self_attn.k_norm.weight": "k_norm.weight",
    "mlp.down_proj.weight": "w2.weight"}
_FUSED = {"wqkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
          "w13": ("mlp.gate_proj", "mlp.up_proj")}


def is_checkpoint(name: str | Path) -> bool:
    """``name`` is a folder holding a config.json (a model name never is)."""
    p = Path(name)
    return p.is_dir() and (p / "config.json").is_file()


def checkpoint_name(path: str | Path) -> str:
    """The model's name in traces and profiles: ``hf:<folder name>`` (stable across machines)."""
    return f"hf:{Path(path).resolve().name}"


def _read_json(path: Path, required: bool = True) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise SpecrollError("missing file", file=path, fix="point --model at a checkpoint folder "
                                "saved by transformers (config.json, *.safetensors, tokenizer.json)")
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise SpecrollError(f"not valid JSON: {exc}", file=path, fix="re-save the checkpoint") from None


def read_config(path: str | Path) -> ModelConfig:
    """config.json (+ generation_config.json's EOS ids) as a ModelConfig; unsupported features refused."""
    path = Path(path)
    c = _read_json(path / "config.json")
    family = c.get("model_type")
    where = path / "config.json"

    def refuse(field: str, what: str) -> SpecrollError:
        return SpecrollError(what, file=where, field=field,
                             fix="use a Llama, Qwen2 or Qwen3 checkpoint without that feature")

    if family not in FAMILIES:
        raise refuse("model_type", f"model type '{family}' is not supported (only {', '.join(FAMILIES)})")
    if c.get("hidden_act", "silu") != "silu":
        raise refuse("hidden_act", f"activation '{c['hidden_act']}' is not supported (silu only)")
    if c.get("mlp_bias"):
        raise refuse("mlp_bias", "MLP biases are not supported")
    if c.get("use_sliding_window"):
        raise refuse("use_sliding_window", "sliding-window attention is not supported")
    try:
        heads = int(c["num_attention_heads"])
        d_model = int(c["hidden_size"])
        rope = dict(c.get("rope_parameters") or c.get("rope_scaling") or {})
        rope_type = rope.pop("rope_type", rope.pop("type", "default"))
        theta = float(rope.pop("rope_theta", c.get("rope_theta", 10_000.0)))
        attn_bias = bool(c.get("attention_bias", False))
        eos = c.get("eos_token_id")
        gen_eos = _read_json(path / "generation_config.json", required=False).get("eos_token_id")
        eos_ids = sorted({int(e) for src in (eos, gen_eos) if src is not None
                          for e in (src if isinstance(src, list) else [src])})
        scaling = () if rope_type == "default" else (("rope_type", rope_type),) + tuple(
            sorted((k, float(v)) for k, v in rope.items() if isinstance(v, int | float)))
        return ModelConfig(
            name=checkpoint_name(path), n_layers=int(c["num_hidden_layers"]), d_model=d_model,
            n_heads=heads, n_kv_heads=int(c.get("num_key_value_heads") or heads),
            head_dim=int(c.get("head_dim") or d_model // heads), d_ff=int(c["intermediate_size"]),
            vocab_size=int(c["vocab_size"]), tied_embeddings=bool(c.get("tie_word_embeddings", False)),
            rope_theta=theta, rms_eps=float(c.get("rms_norm_eps", 1e-6)),
            max_ctx=int(c.get("max_position_embeddings", 4096)), eos_ids=tuple(eos_ids),
            qkv_bias=family == "qwen2" or attn_bias, o_bias=family != "qwen2" and attn_bias,
            qk_norm=family == "qwen3", rope_scaling=scaling)
    except KeyError as exc:
        raise refuse(str(exc.args[0]), f"missing key '{exc.args[0]}'") from None
    except (TypeError, ValueError) as exc:
        raise refuse("config", f"bad value: {exc}") from None


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(_read_json(index).get("weight_map", {}).values()))
        return [path / f for f in files]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise SpecrollError("no *.safetensors weights", file=path,
                            fix="save the checkpoint with safe_serialization (transformers' default)")
    return files


def read_weights(path: str | Path, cfg: ModelConfig,
                 dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under this backend's names (Q/K/V and gate/up fused), in ``dtype``."""
    from safetensors import safe_open

    path = Path(path)
    raw: dict[str, torch.Tensor] = {}
    for f in _weight_files(path):
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                t = fh.get_tensor(key)
                raw[key] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    sd: dict[str, torch.Tensor] = {}

    def take(key: str) -> torch.Tensor:
        if key not in raw:
            raise SpecrollError(f"tensor '{key}' is missing", file=path, field=key,
                                fix="check that config.json matches the weights")
        return raw.pop(key)

    sd["tok_emb.weight"] = take("model.embed_tokens.weight")
    sd["norm.weight"] = take("model.norm.weight")
    if cfg.tied_embeddings:
        raw.pop("lm_head.weight", None)  # some savers write the tied copy too
    else:
        sd["lm_head.weight"] = take("lm_head.weight")
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        for hf, ours in _LAYER_KEYS.items():
            if p + hf in raw:
                sd[f"layers.{i}.{ours}"] = take(p + hf)
        for ours, parts in _FUSED.items():
            sd[f"layers.{i}.{ours}.weight"] = torch.cat([take(f"{p}{q}.weight") for q in parts])
            if ours == "wqkv" and cfg.qkv_bias:
                sd[f"layers.{i}.wqkv.bias"] = torch.cat([take(f"{p}{q}.bias") for q in parts])
    left = sorted(k for k in raw if not k.endswith("rotary_emb.inv_freq"))
    if left:
        raise SpecrollError(f"{len(left)} tensors this architecture does not use, e.g. '{left[0]}'",
                            file=path, field=left[0], fix="check that config.json matches the weights")
    return sd


def read_tokenizer(path: str | Path) -> Any:
    """tokenizer.json with tokenizer_config.json's EOS/BOS tokens and the chat template
    (``chat_template`` in tokenizer_config.json, or chat_template.jinja / chat_template.json)."""
    from tokenizers import Tokenizer as HFTokenizer

    from specroll.real_backend._tokenizer import Tokenizer

    path = Path(path)
    tj = path / "tokenizer.json"
    if not tj.is_file():
        raise SpecrollError("missing file", file=tj, fix="save the tokenizer beside the model "
                            "(tokenizer.save_pretrained(folder))")
    tok = HFTokenizer.from_file(str(tj))
    tc = _read_json(path / "tokenizer_config.json", required=False)
    template = tc.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if template is None and (path / "chat_template.jinja").is_file():
        template = (path / "chat_template.jinja").read_text()
    if template is None and (path / "chat_template.json").is_file():
        template = _read_json(path / "chat_template.json").get("chat_template")

    def token_id(field: str) -> int | None:
        v = tc.get(field)
        v = v.get("content") if isinstance(v, dict) else v
        return None if v is None else tok.token_to_id(v)

    eos = token_id("eos_token")
    if eos is None:
        ids = read_config(path).eos_ids
        if not ids:
            raise SpecrollError("no EOS token", file=path / "tokenizer_config.json", field="eos_token",
                                fix="set eos_token in tokenizer_config.json or eos_token_id in config.json")
        eos = ids[0]
    return Tokenizer.from_parts(tok, eos, token_id("bos_token"), template)


# -- the other way: our weights as transformers' -------------------------------------------------
def hf_config(cfg: ModelConfig) -> dict[str, Any]:
    """A config.json for transformers describing ``cfg`` (Qwen3 when it has Q/K norms, Qwen2 when
    it has Q/K/V biases only, Llama otherwise)."""
    family = "qwen3" if cfg.qk_norm else "qwen2" if cfg.qkv_bias and not cfg.o_bias else "llama"
    arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[family]
    scaling = dict(cfg.rope_scaling)
    rope = {"rope_type": scaling.pop("rope_type", "default"), "rope_theta": cfg.rope_theta, **scaling}
    d = {"architectures": [arch], "model_type": family, "hidden_size": cfg.d_model,
         "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layers,
         "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
         "head_dim": cfg.head_dim, "vocab_size": cfg.vocab_size, "rms_norm_eps": cfg.rms_eps,
         "max_position_embeddings": cfg.max_ctx, "tie_word_embeddings": cfg.tied_embeddings,
         "hidden_act": "silu", "rope_theta": cfg.rope_theta, "rope_parameters": rope,
         "rope_scaling": None if rope["rope_type"] == "default" else rope,
         "eos_token_id": list(cfg.eos_ids) or None}
    if family != "qwen2":
        d["attention_bias"] = cfg.o_bias or cfg.qkv_bias
    return d


def to_hf_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under transformers' names (fused tensors split; views, no copies)."""
    cfg: ModelConfig = model.cfg
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    sd = {"model.embed_tokens.weight": model.tok_emb.weight, "model.norm.weight": model.norm.weight,
          "lm_head.weight": model.tok_emb.weight if model.lm_head is None else model.lm_head.weight}
    inverse = {ours: hf for hf, ours in _LAYER_KEYS.items()}
    for i, blk in enumerate(model.layers):
        p = f"model.layers.{i}."
        for name, t in blk.named_parameters():
            if name in inverse:
                sd[p + inverse[name]] = t
        for kind in ("weight", "bias"):
            fused = getattr(blk.wqkv, kind)
            if fused is not None:
                for part, t in zip(_FUSED["wqkv"], fused.split([q, kv, kv])):
                    sd[f"{p}{part}.{kind}"] = t
        for part, t in zip(_FUSED["w13"], blk.w13.weight.chunk(2)):
            sd[f"{p}{part}.weight"] = t
    return sd
