"""A lean Llama-family decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU, tied or untied
embeddings; Qwen2's Q/K/V biases and Qwen3's per-head Q/K norms) over a static KV cache with one
slot per request, in the gpt-fast style. Loading weights is real_backend/_load.py's job.

The engine calls ``model(tokens, slots, start, cache)`` for prefill, decode and verification
alike: every row has its own start (cached length) and may be right-padded to the batch's query
length Q. Attention reads each row's cache only up to the batch's maximum context ``c_max``
(not the allocated ``max_ctx``), so the cost of a step tracks the bytes it really needs.

Shapes: B rows, Q query tokens, C = c_max cached positions read, D model width, H query heads,
Hkv key/value heads, G = H / Hkv, hd head dim, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from specroll.core.errors import SpecrollError
from specroll.real_backend._cpu_kernel import PackedWeights
from specroll.real_backend._cpu_kernel import available as kernel_available

SMOLLM = "smollm2-135m"
# RoPE bases of the random-weight timing shapes (their published configs); timing does not depend on it.
_ROPE_THETA = {"qwen2.5": 1_000_000.0, "llama-3.1": 500_000.0, "deepseek-r1-distill-qwen": 10_000.0}


@dataclass(frozen=True)
class ModelConfig:
    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab_size: int
    tied_embeddings: bool = True
    rope_theta: float = 10_000.0
    rms_eps: float = 1e-5
    max_ctx: int = 8192
    eos_ids: tuple[int, ...] = ()
    qkv_bias: bool = False  # Qwen2/2.5 have biases on Q/K/V
    o_bias: bool = False    # Llama configs with attention_bias=true also bias the output projection
    qk_norm: bool = False   # Qwen3: RMSNorm over each head's Q and K before RoPE
    rope_scaling: tuple[tuple[str, float | str], ...] = ()  # e.g. Llama-3.1's ("rope_type", "llama3"), ...

    @classmethod
    def from_shape(cls, name: str, **overrides: object) -> ModelConfig:
        """The config of a shape in specroll.core.shapes.MODEL_SHAPES (random-weight timing models)."""
        from specroll.core.shapes import MODEL_SHAPES

        s = MODEL_SHAPES.get(name)
        theta = next((v for k, v in _ROPE_THETA.items() if name.startswith(k)), 10_000.0)
        cfg = cls(name=name, n_layers=s.n_layers, d_model=s.d_model, n_heads=s.n_heads,
                  n_kv_heads=s.n_kv_heads, head_dim=s.head_dim, d_ff=s.d_ff, vocab_size=s.vocab_size,
                  tied_embeddings=s.tied_embeddings, rope_theta=theta,
                  max_ctx=32768, qkv_bias=name.startswith(("qwen", "deepseek-r1-distill-qwen")))
        return replace(cfg, **overrides)  # type: ignore[arg-type]

    @property
    def shape(self):  # -> specroll.core.shapes.ModelShape
        from specroll.core.shapes import ModelShape

        return ModelShape(self.name, self.n_layers, self.d_model, self.n_heads, self.n_kv_heads,
                          self.head_dim, self.d_ff, self.vocab_size, self.tied_embeddings)


class KVCache:
    """Static cache: ``k``, ``v`` [n_layers, n_slots, Hkv, max_ctx, hd]; one slot per request."""

    def __init__(self, cfg: ModelConfig, n_slots: int, max_ctx: int, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        if max_ctx > cfg.max_ctx:
            raise SpecrollError(f"cache of {max_ctx} positions exceeds the model's context {cfg.max_ctx}",
                                field="max_ctx", fix=f"use at most {cfg.max_ctx} positions")
        shape = (cfg.n_layers, int(n_slots), cfg.n_kv_heads, int(max_ctx), cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.n_slots = int(n_slots)
        self.max_ctx = int(max_ctx)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalize in float32 (as the reference implementation does), scale in the model dtype.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        qkv_out = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
        self.attn_norm = RMSNorm(cfg.d_model, cfg.rms_eps)
        # Q, K, V and gate/up are fused: one matmul each instead of three/two.
        self.wqkv = nn.Linear(cfg.d_model, qkv_out, bias=cfg.qkv_bias)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=cfg.o_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_eps)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_eps)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.rms_eps)
        self.w13 = nn.Linear(cfg.d_model, 2 * cfg.d_ff, bias=False)
        self.w2 = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, layer: int, cos: torch.Tensor, sin: torch.Tensor,
                write_idx: tuple[torch.Tensor, torch.Tensor], read: _Read,
                mask: torch.Tensor, cache: KVCache, min_rows: int, lin: _Linear) -> torch.Tensor:
        cfg = self.cfg
        b, q, _ = x.shape
        hkv, g, hd = cfg.n_kv_heads, cfg.n_heads // cfg.n_kv_heads, cfg.head_dim
        qkv = lin(self.attn_norm(x), self.wqkv)                         # [B, Q, (H+2Hkv)*hd]
        xq, xk, xv = qkv.split([cfg.n_heads * hd, hkv * hd, hkv * hd], dim=-1)
        xq, xk = xq.view(b, q, cfg.n_heads, hd), xk.view(b, q, hkv, hd)
        if cfg.qk_norm:
            xq, xk = self.q_norm(xq), self.k_norm(xk)
        xq, xk = _rope(xq, cos, sin), _rope(xk, cos, sin)                    # [B, Q, H|Hkv, hd]
        # Write the new K/V at (slot, position); advanced indices first: target [B, Q, Hkv, hd].
        rows, pos = write_idx
        _write(cache.k[layer], rows, pos, xk)
        _write(cache.v[layer], rows, pos, xv.view(b, q, hkv, hd))
        keys = cache.k[layer][read.index]                                     # [B or span, Hkv, C, hd]
        values = cache.v[layer][read.index]
        # GQA without repeating K/V: the G query heads of a KV head are stacked along the query axis.
        qh = xq.view(b, q, hkv, g, hd).permute(0, 2, 3, 1, 4).reshape(b, hkv, g * q, hd)
        if read.rows is None:
            att = _attention(qh, keys, values, mask, min_rows)                       # [B, Hkv, G*Q, hd]
        else:  # the batch's queries placed at their slots' rows of a view over a span of slots
            spread = qh.new_zeros((keys.shape[0],) + qh.shape[1:])
            spread[read.rows] = qh
            att = _attention(spread, keys, values, read.mask, min_rows)[read.rows]
        att = att.view(b, hkv, g, q, hd).permute(0, 3, 1, 2, 4).reshape(b, q, cfg.n_heads * hd)
        h = x + lin(att, self.wo)
        gate, up = lin(self.ffn_norm(h), self.w13).chunk(2, dim=-1)
        return h + lin(F.silu(gate) * up, self.w2)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
               min_rows: int = 1) -> torch.Tensor:
    """q [B, Hkv, G*Q, hd]; k, v [B, Hkv, C, hd]; mask: additive float [B, 1, G*Q, C] on CPU, bool on GPU.

    On CPU, PyTorch's flash-attention kernel costs ~8 ms per call for a handful of query rows (its
    blocking targets long queries), 20x the plain math below, which is what decode needs."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    gq = q.shape[2]
    if gq < min_rows:  # pad the query rows (see _rows); the padding rows' outputs are dropped
        q = F.pad(q, (0, 0, 0, min_rows - gq))
        mask = F.pad(mask, (0, 0, 0, min_rows - gq))
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5).add_(mask)  # [B, Hkv, GQ, C]
    return torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype), v)[:, :, :gq]


# Batch invariance on CPU: a row's logits must not depend on what else is in the batch, or
# speculative decoding (rows of Q tokens, other requests alongside) could flip a near-tie that
# autoregressive decoding (one row, one token) resolves the other way. The CPU BLAS takes a
# different kernel, with a different summation order, for matrix products of fewer than 4 rows;
# from 4 rows up a row's result is the same bits whatever the row count or context length (checked
# for these shapes; test_model.py asserts the end-to-end property). So products get >= 4 rows.
MIN_ROWS = 4


def _rows(f, x: torch.Tensor, min_rows: int = 1) -> torch.Tensor:
    """f(x) for a row-wise linear map f over x [B, Q, D], with at least ``min_rows`` rows on CPU."""
    b, q = x.shape[0], x.shape[1]
    if b * q >= min_rows or x.device.type != "cpu":
        return f(x)
    flat = F.pad(x.reshape(b * q, x.shape[-1]), (0, 0, 0, min_rows - b * q))
    return f(flat)[:b * q].reshape(b, q, -1)


class _Linear:
    """How one forward runs its linear maps: the packed CPU kernel (real_backend/_cpu_kernel.py,
    batch-invariant by construction, no padding), else torch's own (padded to ``min_rows``)."""

    def __init__(self, packs: PackedWeights | None, min_rows: int) -> None:
        self.packs = packs
        self.min_rows = min_rows

    def __call__(self, x: torch.Tensor, f: nn.Linear | torch.Tensor) -> torch.Tensor:
        weight, bias = (f, None) if isinstance(f, torch.Tensor) else (f.weight, f.bias)
        if self.packs is not None:
            return self.packs(x, weight, bias)
        return _rows(lambda t: F.linear(t, weight, bias), x, self.min_rows)


def _write(layer_cache: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor, new: torch.Tensor) -> None:
    """layer_cache [S, Hkv, T, hd]; rows, pos [B, Q]; new [B, Q, Hkv, hd]."""
    layer_cache.transpose(1, 2).index_put_((rows, pos), new)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE (the Hugging Face layout): x [B, Q, heads, hd]; cos, sin [B, Q, 1, hd]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Transformer(nn.Module):
    # True: a row's logits are the same bits whatever else is in the batch (see MIN_ROWS); on the
    # BLAS path it costs ~35% on CPU forwards of fewer than 4 token rows (measured at batch 1).
    batch_invariant: bool = True
    # True: float32 CPU forwards run their linear maps on the packed kernel where it is available
    # (real_backend/_cpu_kernel.py: batch-invariant by construction, 2-5x the BLAS at small batches).
    cpu_kernel: bool = True

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.tok_emb.weight.requires_grad_(False)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.rms_eps)
        self.lm_head = None if cfg.tied_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        for p in self.parameters():
            p.requires_grad_(False)
        cos, sin = _rope_tables(cfg)                                         # [max_ctx, hd]
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, tokens: torch.Tensor, slots: torch.Tensor, start: torch.Tensor, cache: KVCache,
                c_max: int | None = None, *, n_layers: int | None = None,
                positions: torch.Tensor | None = None, tree: torch.Tensor | None = None,
                aligned: bool = False, last: torch.Tensor | None = None) -> torch.Tensor:
        """tokens int64 [B, Q]; slots int64 [B]; start int64 [B] (cached length = position of
        tokens[:, 0]) -> float32 logits [B, Q, V]. See docs/architecture.md and real_backend/README.md.

        ``c_max`` (positions read per row, >= max(start) + Q) is computed when omitted; the CUDA-graph
        pool passes a fixed bucket instead, since a captured graph cannot depend on tensor values.

        ``n_layers``: run only the first n layers, then the final norm and the LM head (the early exit
        of a layer-skip self-drafter; it writes K/V of those layers only, exactly the target's own).
        ``positions`` int64 [B, Q] and ``tree`` bool [B, Q, Q] verify a token tree: query j is still
        written at cache position start + j, but is rotated as position ``positions[b, j]`` and sees
        the row's cache before ``start`` plus the queries i with ``tree[b, j, i]`` (its ancestors and
        itself). Both default to the causal chain (positions start + j, i <= j).

        ``aligned``: row b reads cache slot b (``slots[b]`` is b, or a scratch slot for a padding
        row's writes), so attention reads the contiguous view of slots 0..B-1 and never gathers:
        the CUDA-graph pool lays batches out this way, where a graph cannot look at slot values.

        ``last`` int64 [B]: return the logits of query column ``last[b]`` of each row only
        ([B, 1, V]; a prefill samples the prompt's last position, so the LM head skips the rest)."""
        b, q = tokens.shape
        dev = tokens.device
        min_rows = MIN_ROWS if self.batch_invariant else 1
        if c_max is None:
            need = int(start.max()) + q
            if need > cache.max_ctx:
                raise ValueError(f"start + Q = {need} exceeds the cache ({cache.max_ctx} positions)")
            # Rounded up to a multiple of 64: the CPU kernels' reduction order then never depends
            # on the batch's exact context (see _rows).
            c_max = min(-(-need // 64) * 64, cache.max_ctx) if self.batch_invariant else need
        if c_max > cache.max_ctx:
            raise ValueError(f"start + Q = {c_max} exceeds the cache ({cache.max_ctx} positions)")
        pos = start[:, None] + torch.arange(q, device=dev)                   # [B, Q]
        rows = slots[:, None].expand(b, q)
        rot = pos if positions is None else positions
        cos = self.rope_cos[rot].to(self.tok_emb.weight.dtype)[:, :, None, :]  # [B, Q, 1, hd]
        sin = self.rope_sin[rot].to(self.tok_emb.weight.dtype)[:, :, None, :]
        read = _Read((slice(0, b), slice(None), slice(0, c_max))) if aligned else _read_plan(slots, c_max)
        g = self.cfg.n_heads // self.cfg.n_kv_heads
        col = torch.arange(c_max, device=dev)[None, None, :]
        if tree is None:
            # Causal over the row's own positions: query at p sees cache positions <= p.
            visible = col <= pos[:, :, None]                                  # [B, Q, C]
        else:  # the cached context, plus the query columns the tree lets each query see
            rel = col - start[:, None, None]                                  # [B, 1, C]
            inside = (rel >= 0) & (rel < q)
            seen = tree.gather(2, rel.clamp(0, q - 1).expand(b, q, c_max))
            visible = (rel < 0) | (inside & seen)
        mask = visible[:, None, None].expand(b, 1, g, q, c_max).reshape(b, 1, g * q, c_max)
        if dev.type == "cpu":  # additive form for the math attention (see _attention)
            mask = torch.zeros(mask.shape, dtype=self.tok_emb.weight.dtype).masked_fill_(~mask, float("-inf"))
        if read.rows is not None:  # rows of the span without a query see everything (no NaN)
            read.mask = mask.new_zeros((read.span,) + mask.shape[1:]).index_copy_(0, read.rows, mask)
        lin = _Linear(self._packs(), min_rows)
        x = self.tok_emb(tokens)                                              # [B, Q, D]
        for i, layer in enumerate(self.layers[:n_layers]):
            x = layer(x, i, cos, sin, (rows, pos), read, mask, cache, min_rows, lin)
        if last is not None:
            x = x[torch.arange(b, device=dev), last][:, None]                 # [B, 1, D]
        x = self.norm(x)
        head = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        return lin(x, head).float()                                           # [B, Q, V]

    def _packs(self) -> PackedWeights | None:
        """The packed weights of the CPU kernel when this model runs on it (see ``cpu_kernel``)."""
        w = self.tok_emb.weight
        if not (self.cpu_kernel and w.device.type == "cpu" and w.dtype == torch.float32
                and kernel_available()):
            return None
        packs = self.__dict__.get("_packed_weights")
        if packs is None:
            packs = self.__dict__["_packed_weights"] = PackedWeights()
        return packs


@dataclass
class _Read:
    """How a forward reads the cache: ``index`` into one layer's cache [S, Hkv, T, hd]; with ``rows``
    set, ``index`` is a view over a span of slots and each query row sits at ``rows[b]`` of it."""

    index: tuple
    rows: torch.Tensor | None = None
    span: int = 0
    mask: torch.Tensor | None = None


def _read_plan(slots: torch.Tensor, c_max: int) -> _Read:
    """Read views, not copies, where the slots allow. Consecutive ascending slots: a plain view.
    Slots filling at least half of their span (rows finished and left holes, or came in any order):
    a view over the span, the queries spread to their slots' rows (the holes cost wasted attention,
    at most as much as the real rows). Otherwise gather the rows (a copy of their K/V per layer,
    +45% step time measured at batch 16, context 900: reason enough to avoid it)."""
    ctx = (slice(None), slice(0, c_max))
    if slots.device.type == "cpu":  # on CUDA a .tolist() would sync (and break graph capture)
        s = slots.tolist()
        lo, hi = min(s), max(s)
        if s == list(range(lo, lo + len(s))):
            return _Read((slice(lo, hi + 1), *ctx))
        if hi - lo + 1 <= 2 * len(s) and len(set(s)) == len(s):
            return _Read((slice(lo, hi + 1), *ctx), rows=slots - lo, span=hi - lo + 1)
    return _Read((slots, *ctx))


def _rope_tables(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [max_ctx, hd] in float32, as transformers computes them (including its scalings)."""
    exponents = torch.arange(0, cfg.head_dim, 2, dtype=torch.int64).float() / cfg.head_dim
    inv_freq = _scaled_inv_freq(1.0 / (cfg.rope_theta ** exponents), dict(cfg.rope_scaling))
    freqs = torch.outer(torch.arange(cfg.max_ctx, dtype=torch.float32), inv_freq)
    freqs = torch.cat((freqs, freqs), dim=-1)
    return freqs.cos(), freqs.sin()


def _scaled_inv_freq(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """RoPE frequency scalings of published checkpoints: none, "linear", and Llama-3.1's "llama3"
    (low frequencies divided by ``factor``, high ones kept, a smooth ramp between)."""
    kind = scaling.get("rope_type", "default")
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind != "llama3":
        raise SpecrollError(f"RoPE scaling '{kind}' is not supported", field="rope_scaling",
                            fix="use a checkpoint with default, linear or llama3 RoPE")
    factor, lo, hi = (float(scaling[k]) for k in ("factor", "low_freq_factor", "high_freq_factor"))
    old = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old / lo, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / hi) & (wavelen <= old / lo)
    return torch.where(medium, smoothed, scaled)
