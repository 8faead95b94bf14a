"""Position-keyed sampling: the token at position t of request r is a pure function of
(seed, r, t, logits), whatever else shares the batch (DESIGN.md §1).

Gumbel-max: token = argmax(logits / T + g) with g = -log(-log(u)) and u a uniform drawn from a
counter-based integer hash of (seed, key, position, vocab index), so no RNG state is carried and
the same integers come out on CPU and CUDA. The hash is a 32-bit multiply-xorshift mixer done in
int64 lanes with multipliers below 2^31 and a mask after each product: values stay below 2^63,
so there is no signed-overflow undefined behaviour on any device. Top-p (nucleus) masking happens
before the argmax; temperature 0 is the plain argmax (greedy).
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9
# Odd multipliers < 2^31 (a product with a 32-bit value stays < 2^63): murmur-style 2-round mixer.
_C1, _C2 = 0x7FEB352D, 0x2C1B3C6D


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit mixer on int64 tensors holding values in [0, 2^32), in place."""
    x ^= x >> 16
    x *= _C1
    x &= _M32
    x ^= x >> 15
    x *= _C2
    x &= _M32
    x ^= x >> 16
    return x


def _absorb(h: torch.Tensor, word: torch.Tensor | int) -> torch.Tensor:
    return _mix(((h ^ (word & _M32)) + _GOLDEN) & _M32)


_VOCAB_HASH: dict[tuple[int, str], torch.Tensor] = {}


def _vocab_hash(v: int, device: torch.device) -> torch.Tensor:
    """Per-vocab-index hash, computed once per (V, device)."""
    k = (v, str(device))
    if k not in _VOCAB_HASH:
        idx = torch.arange(v, dtype=torch.int64, device=device)
        _VOCAB_HASH[k] = _absorb(torch.full_like(idx, 0x243F6A88), idx)
    return _VOCAB_HASH[k]


def row_hash(seed: int, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """int64 [B, Q] in [0, 2^32): the hash of (seed, key, position) for every query slot."""
    seed = int(seed)
    h = torch.full(positions.shape, 0x243F6A88, dtype=torch.int64, device=positions.device)
    keys = keys.to(torch.int64)[:, None].expand(positions.shape)
    for word in (seed & _M32, (seed >> 32) & _M32, keys & _M32, (keys >> 32) & _M32,
                 positions.to(torch.int64) & _M32, (positions.to(torch.int64) >> 32) & _M32):
        h = _absorb(h, word)
    return h


_BITS = 23  # (2^23 - 1 + 0.5) * 2^-23 < 1 exactly in float32; with 24 bits the top value rounds to 1.0


def _uniform(r: torch.Tensor, vocab_hash: torch.Tensor) -> torch.Tensor:
    """float32 uniforms in (0, 1) from row hashes ``r`` and hashed vocab indices (broadcast)."""
    x = _mix(((r ^ vocab_hash) + _GOLDEN) & _M32)
    return ((x >> (32 - _BITS)).to(torch.float32) + 0.5) * (1.0 / (1 << _BITS))


def _gumbel(u: torch.Tensor) -> torch.Tensor:
    return u.log_().neg_().log_().neg_()                                    # -log(-log u), in place


# The largest Gumbel value any token can draw (from the largest uniform; finite), by the same ops.
G_MAX = float(_gumbel(torch.tensor([((1 << _BITS) - 1 + 0.5) / (1 << _BITS)], dtype=torch.float32)))


def keyed_uniform(seed: int, keys: torch.Tensor, positions: torch.Tensor, vocab: int) -> torch.Tensor:
    """float32 [B, Q, V] uniforms in (0, 1): 23 hash bits, exact in float32 (never 0 or 1)."""
    return _uniform(row_hash(seed, keys, positions)[..., None], _vocab_hash(vocab, positions.device))


def top_p_mask(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """bool [..., V]: True for tokens outside the nucleus (the smallest set of most likely tokens whose
    probability reaches top_p; the most likely token is always kept)."""
    probs = torch.softmax(logits, dim=-1)
    sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    mass_before = sorted_p.cumsum(dim=-1) - sorted_p
    drop_sorted = mass_before >= top_p
    drop_sorted[..., 0] = False
    return torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)


def keyed_sample(logits: torch.Tensor, seed: int, keys: torch.Tensor, positions: torch.Tensor,
                 temperature: float, top_p: float = 1.0) -> torch.Tensor:
    """logits [B, Q, V]; keys int64 [B] (request identity); positions int64 [B, Q] (absolute response
    position) -> int64 [B, Q] tokens, each a deterministic function of (seed, key, position, its
    logits row). Temperature 0 = argmax."""
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B, Q, V], got {tuple(logits.shape)}")
    if temperature < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    keys = torch.as_tensor(keys, dtype=torch.int64, device=logits.device)
    positions = torch.as_tensor(positions, dtype=torch.int64, device=logits.device)
    scaled = logits.float() / float(temperature)
    if top_p < 1.0:
        scaled = scaled.masked_fill(top_p_mask(scaled, top_p), float("-inf"))
    # Every vocabulary entry is hashed: pruning to the top candidates (a token outside them scores
    # at most the smallest candidate + G_MAX) decided only ~30% of SmolLM2's rows at T=0.7 with 128
    # candidates (measured), not worth its top-k.
    return (scaled + _gumbel(keyed_uniform(seed, keys, positions, scaled.shape[-1]))).argmax(dim=-1)
