"""The physical form of the cost model, shared by the profile (prediction) and the fitter.

    t = t_fixed + t_request * n + t_token * sampled + roofline(bytes, flops) + allreduce(tp)

    sampled = q_tok for a decode/verify (every query position is sampled), n for a prefill (only
              each prompt's last position is): the per-position sampling and host work

    bytes = W/tp + KV * (a * c_sum + (1 - a) * n * c_max)           weights once, each request's KV
    q_tok = b * q_sum + (1 - b) * n * q_max                         ragged vs padded query tokens
    flops = LF/tp * q_tok / e_f + AF/tp * pairs / e_attn            (efficiency folded in)
    pairs = a * qc_sum + (1 - a) * n * q_max * (c_max + (q_max + 1) / 2)
    roofline = ((bytes / (BW e_bw))^p + (flops / F)^p)^(1/p)         a smooth max (p -> inf: max)

``a`` and ``b`` say how ragged the backend is (1 = pays for the sum, 0 = pads to the longest):
rollout tails mix very uneven contexts in one batch, and a padded batch costs n * c_max, not
n * mean(c). ``p`` says how well memory traffic and compute overlap (1 = not at all, large = fully).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Order of the fitted coefficient vector.
COEF_NAMES: tuple[str, ...] = ("t_fixed", "t_request", "t_token", "e_bw", "e_f", "e_attn", "p", "a", "b")

# Physical bounds used by the fitter and by profile validation.
COEF_BOUNDS: dict[str, tuple[float, float]] = {
    "t_fixed": (0.0, 10.0),
    "t_request": (0.0, 1.0),
    "t_token": (0.0, 1.0),
    "e_bw": (1e-4, 2.0),      # > 1 is possible when the measured peak underestimates (caches)
    "e_f": (1e-4, 2.0),
    "e_attn": (1e-5, 2.0),
    "p": (1.0, 16.0),
    "a": (0.0, 1.0),
    "b": (0.0, 1.0),
}

DTYPE_BYTES: dict[str, float] = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "fp8": 1.0}


@dataclass(frozen=True)
class Consts:
    """Per-profile constants from model shape x device x TP x dtype (nothing fitted)."""

    weight_bytes: float      # per device (already / tp)
    kv_bytes_per_token: float
    linear_flops_per_token: float
    attention_flops_per_pair: float
    mem_bw: float
    peak_flops: float
    tp: int
    n_layers: int
    d_model: int
    dtype_bytes: float
    link_bw: float
    link_latency: float


def make_consts(shape, device, tp: int, dtype_bytes: float) -> Consts:
    """Split weights, KV heads and FLOPs over ``tp`` devices (KV heads cannot split below one)."""
    kv_split = max(1, min(tp, shape.n_kv_heads))
    return Consts(
        weight_bytes=shape.weight_bytes(dtype_bytes) / tp,
        kv_bytes_per_token=shape.kv_bytes_per_token(dtype_bytes) / kv_split,
        linear_flops_per_token=shape.linear_flops_per_token() / tp,
        attention_flops_per_pair=shape.attention_flops_per_pair() / tp,
        mem_bw=device.mem_bw,
        peak_flops=device.peak_flops,
        tp=tp,
        n_layers=shape.n_layers,
        d_model=shape.d_model,
        dtype_bytes=dtype_bytes,
        link_bw=device.link_bw,
        link_latency=device.link_latency,
    )


def forward_time(coef: dict[str, float], k: Consts, n: np.ndarray, q_sum: np.ndarray,
                 q_max: np.ndarray, c_sum: np.ndarray, c_max: np.ndarray,
                 qc_sum: np.ndarray, prefill: bool | np.ndarray = False) -> np.ndarray:
    """Seconds of one engine iteration for each row (no drafter, no idle masking).

    ``prefill`` (a bool or a per-row mask) marks prefills, which sample one position per prompt
    instead of every query position: it changes only what ``t_token`` multiplies. Sampling a
    49k-way vocabulary at T > 0 costs ~0.3 ms per position on a CPU core, so pricing a 256-token
    prompt as 256 sampled positions would over-charge a prefill by far more than its error."""
    a, b = coef["a"], coef["b"]
    # A fully ragged backend (a or b == 1, e.g. the what-if profiles) has padded terms that are
    # exactly 0 (0 * finite + x == x), so skipping them gives the same bits with fewer passes: the
    # simulator prices every (iteration, engine) pair of a step through here.
    kv_tokens = c_sum if a == 1.0 else a * c_sum + (1.0 - a) * n * c_max
    q_tok = q_sum if b == 1.0 else b * q_sum + (1.0 - b) * n * q_max
    pairs = qc_sum if a == 1.0 else a * qc_sum + (1.0 - a) * n * q_max * (c_max + 0.5 * (q_max + 1.0))
    t_bytes = (k.weight_bytes + k.kv_bytes_per_token * kv_tokens) / (k.mem_bw * coef["e_bw"])
    t_flops = (k.linear_flops_per_token * q_tok / coef["e_f"]
               + k.attention_flops_per_pair * pairs / coef["e_attn"]) / k.peak_flops
    p = coef["p"]
    # Scale by the larger term before the power so that p up to 16 never overflows or underflows.
    # The larger term's ratio is exactly 1 and 1**p == 1, so one power suffices (same bits).
    big = np.maximum(t_bytes, t_flops)
    roof = big * (1.0 + (np.minimum(t_bytes, t_flops) / big) ** p) ** (1.0 / p)
    if coef["t_request"] == 0.0 and coef["t_token"] == 0.0:
        t = coef["t_fixed"] + roof  # the zero terms add exactly 0 (n, q finite)
    else:
        sampled = q_tok if prefill is False else (n if prefill is True else np.where(prefill, n, q_tok))
        t = coef["t_fixed"] + coef["t_request"] * n + coef["t_token"] * sampled + roof
    if k.tp > 1:
        t = t + allreduce_time(k, q_tok)
    return t


def allreduce_time(k: Consts, q_tok: np.ndarray) -> np.ndarray:
    """Two all-reduces per layer (attention output, MLP output) of the activations.

    Latency as a tree / recursive doubling (2 log2 tp hops, what NCCL's low-latency protocols do
    for small decode messages), bandwidth as a ring (each byte crosses 2 (tp - 1) / tp links).
    """
    if k.tp <= 1:
        return np.zeros_like(q_tok)
    msg = q_tok * k.d_model * k.dtype_bytes
    latency = 2.0 * math.ceil(math.log2(k.tp)) * k.link_latency
    per_allreduce = latency + 2.0 * (k.tp - 1) / k.tp * msg / max(k.link_bw, 1.0)
    return 2.0 * k.n_layers * per_allreduce


# --- the drafter's share of an iteration --------------------------------------------------------
# Drafter kinds priced by forward passes of a model (the rest are model-free: per_request_s * n +
# per_token_s * draft_tokens, measured on the CPU by calibration/_drafter_cost.py):
#   model     a separate small draft model: K sequential one-token decodes over the batch (K ~ the
#             engine's mean draft, draft_tokens / n);
#   layers    self-speculation (LayerSkip, Duo-LLM): each draft token is a partial forward of the
#             target over its first `layers` layers plus its LM head, i.e. the "model" kind with
#             the target's shape cut to that many layers (f = layers / L of the layer work);
#   parallel  a diffusion drafter (DiffuSpec): `denoise_steps` forwards (default 1) that fill every
#             request's k masked positions at once, so the number of forwards does not grow with k.
# `overlap = true` (PEARL) puts the drafter on its own device(s): draft and verify run concurrently
# and the iteration costs the longer of the two instead of their sum.
FORWARD_DRAFTERS = ("model", "layers", "parallel")


def drafter_forward_time(kind: str, coef: dict[str, float], dk: Consts, n: np.ndarray, draft: np.ndarray,
                         q_max: np.ndarray, c_sum: np.ndarray, c_max: np.ndarray, *, denoise_steps: int = 1,
                         block: int | None = None, kv_cache: bool = True) -> np.ndarray:
    """Seconds the drafter of ``kind`` (one of FORWARD_DRAFTERS, constants ``dk``) spends per engine.

    ``draft``: draft tokens per engine; ``q_max``: the verify's longest query (longest draft + 1).
    Engines with ``n == 0`` get garbage the caller masks; engines that draft nothing get 0.
    """
    nz = np.maximum(n, 1.0)
    if kind in ("model", "layers"):
        steps = np.divide(draft, n, out=np.zeros_like(draft), where=n > 0)
        one = forward_time(coef, dk, n, n, np.ones_like(n), c_sum, c_max, c_sum + n)
        return steps * one
    # parallel: every drafting request denoises its block of masked positions in one forward. The
    # block is the request's own draft (q = k, one forward whatever k: flat while memory-bound) or
    # a fixed ``block``. Without a KV cache (a plain bidirectional DLM) the forward also re-reads
    # the whole context as query tokens.
    k_mean = draft / nz
    q_req = k_mean if block is None else np.where(draft > 0, float(block), 0.0)
    k_hi = np.maximum(q_max - 1.0, 0.0) if block is None else np.where(draft > 0, float(block), 0.0)
    c_mean = c_sum / nz
    if kv_cache:
        q_sum, qm = n * q_req, k_hi
        qc = q_sum * c_mean + q_sum * (q_req + 1.0) / 2.0  # each request's mean context (approximation)
        cs, cm = c_sum, c_max
    else:
        q_sum, qm = n * (q_req + c_mean), k_hi + c_max
        qc = q_sum * (q_sum / nz + 1.0) / 2.0
        cs, cm = np.zeros_like(c_sum), np.zeros_like(c_max)
    one = forward_time(coef, dk, n, q_sum, np.maximum(qm, 1.0), cs, cm, qc)
    return np.where(draft > 0, float(denoise_steps) * one, 0.0)
