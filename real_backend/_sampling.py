"""Position-keyed sampling: the token at position t of request r is a pure function of
(seed, r, t, logits), whatever else shares the batch (docs/design.md §1).

Inverse-CDF sampling with a keyed uniform: u is drawn from a counter-based integer hash of
(seed, key, position), so no RNG state is carried and the same integers come out on CPU and CUDA;
the token is the first whose cumulative probability under softmax(logits / T) reaches u. The hash
is a 32-bit multiply-xorshift mixer done in int64 lanes with multipliers below 2^31 and a mask
after each product: values stay below 2^63, so there is no signed-overflow undefined behaviour on
any device. Top-p (nucleus) masking happens before the softmax; temperature 0 is the argmax.

Why not Gumbel-max (argmax of logits / T plus keyed Gumbel noise per vocabulary entry, which an
earlier version used): it hashes all 49k entries of every sampled position, ~12 int64 passes,
0.3-1.5 ms per position on a CPU core, superlinear once the intermediates leave the cache (161 ms
for 16 requests verifying 8 tokens, more than the forward). One uniform per position and three
float32 passes (softmax, cumsum, search) over 32-position chunks cost ~0.07 ms per position,
linearly. Both are exact samplers of softmax(logits / T); both are lossless here because AR and
speculation call the same function on the same logits.
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
# Positions sampled per pass on a CPU: 32 x 49k float32 (6 MB) stays in cache, so the cost is linear.
_ROW_CHUNK = 32


def keyed_uniform(seed: int, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """float32 [B, Q] uniforms in (0, 1): 23 hash bits of (seed, key, position), exact in float32
    (never 0 or 1)."""
    x = _mix(((row_hash(seed, keys, positions) ^ 0x5BD1E995) + _GOLDEN) & _M32)
    return ((x >> (32 - _BITS)).to(torch.float32) + 0.5) * (1.0 / (1 << _BITS))


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
    B, Q, V = logits.shape
    u = keyed_uniform(seed, keys, positions).reshape(-1)
    flat = logits.reshape(B * Q, V)
    out = torch.empty(B * Q, dtype=torch.int64, device=logits.device)
    step = B * Q if logits.is_cuda else _ROW_CHUNK  # a GPU has the bandwidth: one pass, few launches
    for lo in range(0, B * Q, step):
        scaled = flat[lo:lo + step].float() / float(temperature)
        if top_p < 1.0:
            scaled = scaled.masked_fill(top_p_mask(scaled, top_p), float("-inf"))
        cdf = torch.softmax(scaled, dim=-1).cumsum_(dim=-1)
        # The first token whose cumulative probability reaches u * total (a zero-probability token
        # never is: its cdf equals its predecessor's, which is already below the target).
        target = (u[lo:lo + step] * cdf[:, -1])[:, None]
        out[lo:lo + step] = torch.searchsorted(cdf, target).squeeze(-1).clamp_(max=V - 1)
    return out.view(B, Q)
