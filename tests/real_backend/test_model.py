"""The lean Llama: same logits as transformers' Llama on the same weights; static-cache semantics."""

from __future__ import annotations

import os

import pytest
import torch

from specroll.calibration import MODEL_SHAPES
from specroll.core.errors import SpecrollError
from specroll.real_backend import KVCache, ModelConfig, Transformer, load_model, load_tokenizer

from .test_model_common import TINY, needs_gguf, tiny_model


def _hf_llama(model):
    """transformers' LlamaForCausalLM holding our model's weights (unfused)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.cfg
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_eps,
        rope_theta=cfg.rope_theta, max_position_embeddings=cfg.max_ctx, tie_word_embeddings=True,
        attention_bias=False, mlp_bias=False)).eval()
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    sd = {"model.embed_tokens.weight": model.tok_emb.weight, "model.norm.weight": model.norm.weight,
          "lm_head.weight": model.tok_emb.weight}
    for i, blk in enumerate(model.layers):
        p = f"model.layers.{i}."
        wq, wk, wv = blk.wqkv.weight.split([q, kv, kv])
        gate, up = blk.w13.weight.chunk(2)
        sd.update({p + "self_attn.q_proj.weight": wq, p + "self_attn.k_proj.weight": wk,
                   p + "self_attn.v_proj.weight": wv, p + "self_attn.o_proj.weight": blk.wo.weight,
                   p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up,
                   p + "mlp.down_proj.weight": blk.w2.weight,
                   p + "input_layernorm.weight": blk.attn_norm.weight,
                   p + "post_attention_layernorm.weight": blk.ffn_norm.weight})
    hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    return hf


def _forward(model, tokens, slots, start, cache):
    with torch.inference_mode():
        return model(tokens, slots, start, cache)


def test_logits_match_transformers_llama_on_the_same_weights():
    model = tiny_model(1)
    hf = _hf_llama(model)
    tokens = torch.randint(0, TINY.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    cache = KVCache(TINY, 2, 32)
    ours = _forward(model, tokens, torch.arange(2), torch.zeros(2, dtype=torch.int64), cache)
    with torch.inference_mode():
        ref = hf(tokens).logits
    assert ours.dtype == torch.float32 and ours.shape == (2, 20, TINY.vocab_size)
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)


def test_prefill_then_decode_equals_one_shot_forward():
    model = tiny_model(2)
    seq = torch.randint(0, TINY.vocab_size, (1, 24), generator=torch.Generator().manual_seed(1))
    whole = _forward(model, seq, torch.tensor([0]), torch.tensor([0]), KVCache(TINY, 1, 32))
    cache = KVCache(TINY, 1, 32)
    parts = [_forward(model, seq[:, :10], torch.tensor([0]), torch.tensor([0]), cache)]
    for t in range(10, 24, 3):  # verify-style chunks of 3 (the last one shorter)
        chunk = seq[:, t:t + 3]
        parts.append(_forward(model, chunk, torch.tensor([0]), torch.tensor([t]), cache))
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-5, rtol=1e-5)


def test_mixed_batch_equals_each_row_alone_and_padding_does_not_leak():
    model = tiny_model(3)
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, TINY.vocab_size, (n,), generator=g) for n in (5, 17, 9)]
    news = [torch.randint(0, TINY.vocab_size, (n,), generator=g) for n in (3, 1, 5)]
    slots = torch.tensor([4, 0, 2])  # scattered slots: the gathered read path
    batch_cache = KVCache(TINY, 5, 40)
    for p, s in zip(prompts, slots.tolist()):
        _forward(model, p[None], torch.tensor([s]), torch.tensor([0]), batch_cache)
    q = max(len(n) for n in news)
    tokens = torch.full((3, q), 7, dtype=torch.int64)  # right-padded with an arbitrary id
    for i, n in enumerate(news):
        tokens[i, :len(n)] = n
    start = torch.tensor([len(p) for p in prompts])
    batched = _forward(model, tokens, slots, start, batch_cache)
    for i, (p, n) in enumerate(zip(prompts, news)):
        alone = _forward(model, torch.cat([p, n])[None], torch.tensor([0]), torch.tensor([0]),
                         KVCache(TINY, 1, 40))
        torch.testing.assert_close(batched[i, :len(n)], alone[0, len(p):], atol=1e-5, rtol=1e-5)
    # The padded positions' garbage K/V never reaches a later real token: decode the next real token
    # of row 0 (whose padding overwrote positions 8..9) and compare with the row alone.
    nxt = torch.tensor([[11], [12], [13]])
    start2 = start + torch.tensor([len(n) for n in news])
    after = _forward(model, nxt, slots, start2, batch_cache)
    for i, (p, n) in enumerate(zip(prompts, news)):
        seq = torch.cat([p, n, nxt[i]])[None]
        alone = _forward(model, seq, torch.tensor([0]), torch.tensor([0]), KVCache(TINY, 1, 40))
        torch.testing.assert_close(after[i, 0], alone[0, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("slots, mode", [([1, 2, 3], "view"), ([3, 1, 2], "spread"), ([4, 0, 2], "spread"),
                                         ([9, 0, 5], "gather")])
def test_every_cache_read_plan_gives_the_same_logits(slots, mode):
    from specroll.real_backend._model import _read_plan

    plan = _read_plan(torch.tensor(slots), 16)
    assert mode == ("gather" if not isinstance(plan.index[0], slice) else
                    "view" if plan.rows is None else "spread")
    model = tiny_model(4)
    tokens = torch.randint(0, TINY.vocab_size, (3, 6), generator=torch.Generator().manual_seed(3))
    start = torch.tensor([0, 0, 0])
    ref = _forward(model, tokens, torch.tensor([0, 1, 2]), start, KVCache(TINY, 10, 16))
    got = _forward(model, tokens, torch.tensor(slots), start, KVCache(TINY, 10, 16))
    assert torch.equal(got, ref)


def test_overflowing_the_cache_is_a_clear_error():
    model = tiny_model(0)
    cache = KVCache(TINY, 1, 16)
    with pytest.raises(ValueError, match="exceeds the cache"):
        _forward(model, torch.zeros(1, 4, dtype=torch.int64), torch.tensor([0]), torch.tensor([13]), cache)
    with pytest.raises(SpecrollError, match="context"):
        KVCache(TINY, 1, TINY.max_ctx + 1)


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b", "llama-3.1-8b"])
def test_timing_configs_have_the_calibration_shapes(name):
    cfg = ModelConfig.from_shape(name)
    assert cfg.shape == MODEL_SHAPES.get(name)
    with torch.device("meta"):  # no memory: count the parameters on the meta device
        n = sum(p.numel() for p in Transformer(cfg).parameters())
    biases = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim * cfg.n_layers if cfg.qkv_bias else 0
    assert n == MODEL_SHAPES.get(name).n_params + biases


def test_unknown_model_and_untrained_shapes_are_clear_errors():
    with pytest.raises(SpecrollError, match="unknown model"):
        load_model("gpt-17")
    with pytest.raises(SpecrollError, match="no trained weights"):
        load_model("llama-3.1-8b")
    with pytest.raises(SpecrollError, match="dtype"):
        load_model("smollm2-135m", dtype="int3", random_weights=True)


@needs_gguf
def test_smollm2_loads_from_the_gguf_and_answers_sensibly():
    model = load_model()
    cfg = model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == (30, 576, 9, 3, 49152)
    assert cfg.rope_theta == 100_000.0 and cfg.tied_embeddings and cfg.eos_ids == (2,)
    assert cfg.shape == MODEL_SHAPES.get("smollm2-135m")
    tok = load_tokenizer()
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    cache = KVCache(cfg, 1, 128)
    x, start, out = torch.tensor([ids]), 0, []
    for _ in range(8):  # greedy decoding through the cache: Q/K permutation or RoPE bugs give gibberish
        logits = _forward(model, x, torch.tensor([0]), torch.tensor([start]), cache)
        start += x.shape[1]
        out.append(int(logits[0, -1].argmax()))
        x = torch.tensor([[out[-1]]])
    assert "Paris" in tok.decode(out)


@needs_gguf
@pytest.mark.slow  # transformers dequantizes the GGUF itself: ~35 s
def test_smollm2_logits_match_transformers_loading_the_same_gguf():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM

    from specroll.real_backend import model_file

    path = model_file()
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                              dtype=torch.float32).eval()
    model = load_model()
    tok = load_tokenizer()
    ids = tok.apply_chat_template([{"role": "user", "content": "Tom has 3 boxes of 12 pencils. How many?"}])
    tokens = torch.tensor([ids])
    ours = _forward(model, tokens, torch.tensor([0]), torch.tensor([0]), KVCache(model.cfg, 1, 128))
    with torch.inference_mode():
        ref = hf(tokens).logits.float()
    torch.testing.assert_close(ours, ref, atol=1e-3, rtol=1e-3)
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))


@pytest.fixture(scope="module")
def smol_shape():
    return load_model("smollm2-135m", random_weights=True, seed=3, max_ctx=512)


@pytest.mark.parametrize("threads", [1, 2])
def test_rows_are_bitwise_batch_invariant_on_cpu(smol_shape, threads):
    """A row's logits are the same bits whether it is decoded alone one token at a time or verified
    as Q tokens in a batch of other rows (different slots, contexts, query lengths): what makes
    speculative decoding reproduce autoregressive decoding exactly on the real model."""
    model, cfg = smol_shape, smol_shape.cfg
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(threads)
        prompt_lens, q_lens = [37, 5, 90, 64], [1, 4, 3, 2]
        seqs = [torch.randint(0, cfg.vocab_size, (p + q,), generator=g) for p, q in zip(prompt_lens, q_lens)]
        slots = torch.tensor([2, 0, 3, 1])
        batch_cache = KVCache(cfg, 4, 128)
        for s, p, seq in zip(slots.tolist(), prompt_lens, seqs):
            _forward(model, seq[None, :p], torch.tensor([s]), torch.tensor([0]), batch_cache)
        tokens = torch.zeros(4, max(q_lens), dtype=torch.int64)
        for i, (p, q) in enumerate(zip(prompt_lens, q_lens)):
            tokens[i, :q] = seqs[i][p:]
        batched = _forward(model, tokens, slots, torch.tensor(prompt_lens), batch_cache)
        for i, (p, q) in enumerate(zip(prompt_lens, q_lens)):
            alone = KVCache(cfg, 1, 128)
            _forward(model, seqs[i][None, :p], torch.tensor([0]), torch.tensor([0]), alone)
            for j in range(q):  # autoregressive: one token per forward
                one = _forward(model, seqs[i][None, p + j:p + j + 1], torch.tensor([0]),
                               torch.tensor([p + j]), alone)
                assert torch.equal(one[0, 0], batched[i, j]), (i, j)
    finally:
        torch.set_num_threads(saved)
