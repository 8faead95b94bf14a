"""Tiny random Hugging Face checkpoints (Llama, Qwen2, Qwen3) written by transformers itself into a
folder, with a byte-level tokenizer and a ChatML chat template: what `--model PATH` reads."""

from __future__ import annotations

from pathlib import Path

import torch

CHATML = ("{% for m in messages %}"
          "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
VOCAB = 272  # 256 byte tokens + 3 specials, rounded up as published vocabularies are

# family, tied embeddings, extra config: one case per feature the loader must get right.
CASES = {
    "llama-tied": ("llama", True, {}),
    # Llama-3.1's RoPE scaling (its original context small enough to matter here) and attention biases.
    "llama-untied-rope3-bias": ("llama", False, {
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
        "attention_bias": True}),
    "qwen2-tied": ("qwen2", True, {}),       # Q/K/V biases (Qwen2.5-0.5B/1.5B tie their embeddings)
    "qwen2-untied": ("qwen2", False, {}),    # (Qwen2.5-7B does not)
    "qwen3-untied": ("qwen3", False, {}),    # per-head Q/K norms
    "qwen3-tied": ("qwen3", True, {}),
}


def write_tokenizer(folder: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|endoftext|>",
                                   chat_template=CHATML)
    fast.save_pretrained(str(folder))


def write_checkpoint(folder: Path, case: str, seed: int = 0, scale: float = 0.3):
    """Save a random model of ``case`` (see CASES) and the tokenizer; returns transformers' model."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

    family, tied, extra = CASES[case]
    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}[family]
    cfg = config_cls(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=24, max_position_embeddings=512,
                     tie_word_embeddings=tied, rope_theta=5000.0, rms_norm_eps=1e-6, eos_token_id=258,
                     bos_token_id=256, **extra)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # weights larger than transformers' init: sharper, less uniform logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, scale)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    write_tokenizer(folder)
    return model
