"""Counter-based hashing: uniform draws keyed by (seed, step, prompt_id, sample, position).

Every random acceptance draw is a pure function of its key, never of a generator's state: the same
rollout sees the same draws whatever the dispatch, the policy or the order engines run in (common
random numbers across policies, and a fast path equal to the loop bit for bit).
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint32(0x9E3779B9)


def fmix32(x: np.ndarray) -> np.ndarray:
    """murmur3's finalizer, in place on uint32: a bijection with good avalanche."""
    tmp = np.empty_like(x)
    for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35), (16, 0)):
        np.right_shift(x, np.uint32(shift), out=tmp)
        x ^= tmp
        if mult:
            x *= np.uint32(mult)
    return x


def rollout_keys(seed: int, step: int, prompt_id: np.ndarray, sample: np.ndarray, stream: int
                 ) -> np.ndarray:
    """uint32 (R,): one key per rollout and random stream, independent of dispatch and policy."""
    with np.errstate(over="ignore"):
        pid = np.asarray(prompt_id, dtype=np.int64).astype(np.uint64)
        x = fmix32(np.full(pid.shape, (seed * 0x2545F491 + stream * 0x68E31DA4) & 0xFFFFFFFF,
                            dtype=np.uint32) ^ np.uint32(step & 0xFFFFFFFF))
        x = fmix32(x ^ (pid & np.uint64(0xFFFFFFFF)).astype(np.uint32))
        x = fmix32(x ^ (pid >> np.uint64(32)).astype(np.uint32))
        x = fmix32(x ^ np.asarray(sample, dtype=np.int64).astype(np.uint32))
    return x


def position_bits(keys: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """uint32 hash of (key, position t within its rollout) for every position, concatenated."""
    total = int(lens.sum())
    starts = np.cumsum(lens) - lens
    with np.errstate(over="ignore"):
        base = keys - (starts.astype(np.uint32) * _GOLDEN)
        x = np.repeat(base, lens)
        x += np.arange(total, dtype=np.uint32) * _GOLDEN
    return fmix32(x)


def to_unit(bits: np.ndarray) -> np.ndarray:
    return (bits >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))
