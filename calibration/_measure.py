"""Measure the real backend's own forward step over a grid of batches, and the device's peaks.

The grid crosses batch size x query length x context length, and adds what rollouts look like
but a plain grid never shows: skewed batches (most contexts short, one long: the tail of an RL
step) and mixed query lengths (per-request draft lengths). Points run in a seeded random order
so that slow drift of the machine (thermal, noisy neighbours) does not correlate with a feature.
Each point: warm-up runs, then repeats; the median is the measurement.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from specroll.calibration._batch import IterationBatch
from specroll.calibration._devices import DEVICES, DeviceSpec
from specroll.calibration._fit import FEATURES
from specroll.core.errors import SpecrollError
from specroll.core.progress import progress


class TimingStep(Protocol):
    """What real_backend.make_timing_step returns (docs/architecture.md)."""

    shape: object

    def run(self, q_lens: Sequence[int], ctx_lens: Sequence[int]) -> float: ...


@dataclass(frozen=True)
class GridPoint:
    kind: str              # uniform | skewed | mixed_q | prefill
    q_lens: tuple[int, ...]
    ctx_lens: tuple[int, ...]


@dataclass(frozen=True)
class GridSpec:
    batch_sizes: tuple[int, ...]
    query_lens: tuple[int, ...]
    contexts: tuple[int, ...]
    prefill_lens: tuple[int, ...]
    prefill_batches: tuple[int, ...]
    skewed_per_batch: int
    warmup: int
    repeats: int


# Sized so that `specroll calibrate --device cpu` on SmolLM2-135M takes a few minutes on 2 cores.
CPU_GRID = GridSpec((1, 2, 4, 8, 16), (1, 2, 4, 8), (16, 256, 1024), (16, 64, 256), (1, 2), 2, 2, 5)
CPU_QUICK = GridSpec((1, 4, 16), (1, 4), (16, 512), (32,), (1,), 1, 1, 3)
# On a GPU forwards are ~1000x cheaper: a much wider grid in the same time.
CUDA_GRID = GridSpec((1, 2, 4, 8, 16, 32, 64, 128, 256), (1, 2, 4, 8, 16), (64, 512, 2048, 8192),
                     (128, 512, 2048), (1, 4, 16), 3, 5, 20)
CUDA_QUICK = GridSpec((1, 8, 64), (1, 4), (128, 2048), (512,), (1, 4), 1, 3, 10)


def grid_spec(device: str, quick: bool) -> GridSpec:
    if device.startswith("cuda"):
        return CUDA_QUICK if quick else CUDA_GRID
    return CPU_QUICK if quick else CPU_GRID


def build_grid(spec: GridSpec, max_batch: int, max_ctx: int, seed: int = 0) -> list[GridPoint]:
    """The points to measure, in a seeded random order; contexts and batches clipped to the limits."""
    rng = np.random.default_rng(seed)
    ctxs = sorted({min(c, max_ctx - max(spec.query_lens)) for c in spec.contexts})
    batches = [b for b in spec.batch_sizes if b <= max_batch]
    pts: list[GridPoint] = []
    for n in batches:
        for q in spec.query_lens:
            for c in ctxs:
                pts.append(GridPoint("uniform", (q,) * n, (c,) * n))
            if n == 1:
                continue
            for _ in range(spec.skewed_per_batch):
                # A rollout tail: most contexts short (log-uniform up to a quarter), one at the maximum.
                c = np.exp(rng.uniform(np.log(8), np.log(max(8, max(ctxs) // 4)), n)).astype(int)
                c[rng.integers(n)] = max(ctxs)
                pts.append(GridPoint("skewed", (q,) * n, tuple(int(x) for x in c)))
        if n > 1:
            for _ in range(spec.skewed_per_batch):
                q = rng.integers(1, max(spec.query_lens) + 1, n)
                c = rng.integers(8, max(ctxs) + 1, n)
                pts.append(GridPoint("mixed_q", tuple(int(x) for x in q), tuple(int(x) for x in c)))
    for n in spec.prefill_batches:
        for L in spec.prefill_lens:
            if n <= max_batch and max_ctx >= L:
                pts.append(GridPoint("prefill", (L,) * n, (0,) * n))
    order = rng.permutation(len(pts))
    return [pts[i] for i in order]


def point_features(p: GridPoint) -> dict[str, float]:
    b = IterationBatch.from_requests(np.array(p.q_lens), np.array(p.ctx_lens))
    return {f: float(getattr(b, f)[0]) for f in FEATURES}


def measure_grid(step: TimingStep, grid: list[GridPoint], warmup: int, repeats: int,
                 desc: str = "calibrate") -> list[dict]:
    """Time every point: ``warmup`` discarded runs, then ``repeats`` runs; median, min and spread.

    The repeats are taken in ``repeats`` passes over the whole grid rather than back to back, so a
    burst of load from another process spreads over many points instead of spoiling one.
    """
    times = np.zeros((len(grid), repeats))
    bar = progress(total=len(grid) * repeats, desc=desc, unit="run")
    for r in range(repeats):
        for i, p in enumerate(grid):
            for _ in range(warmup if r == 0 else 0):
                step.run(list(p.q_lens), list(p.ctx_lens))
            times[i, r] = float(step.run(list(p.q_lens), list(p.ctx_lens)))
            bar.update(1)
    bar.close()
    rows = []
    for i, p in enumerate(grid):
        ts = times[i]
        if not np.all(np.isfinite(ts)) or (ts <= 0).any():
            raise SpecrollError(f"timing step returned {ts.tolist()} for point {p}", field="timing",
                                fix="check the real backend's make_timing_step")
        q25, q75 = np.percentile(ts, [25, 75])
        rows.append({"point": i, "kind": p.kind, "q_lens": list(p.q_lens), "ctx_lens": list(p.ctx_lens),
                     **point_features(p), "seconds": float(np.median(ts)), "seconds_min": float(ts.min()),
                     "seconds_iqr": float(q75 - q25), "repeats": repeats})
    return rows


# -- device peaks ----------------------------------------------------------------------------

_CUDA_NAMES = {"H100": "h100-sxm", "H200": "h200", "A100": "a100-80gb", "B200": "b200", "L40S": "l40s"}


def datasheet_for_cuda_name(name: str) -> DeviceSpec | None:
    """Map torch.cuda.get_device_name() to a datasheet entry ("NVIDIA H100 80GB HBM3" -> h100-sxm)."""
    for key, dev in _CUDA_NAMES.items():
        if key in name.upper():
            return DEVICES.get(dev)
    return None


def _best_seconds(fn: Callable[[], object], sync: Callable[[], None], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_peaks(device: str, dtype: str) -> DeviceSpec:
    """A DeviceSpec for this machine: datasheet figures for a known GPU, microbenchmarks otherwise.

    On a CPU there is no datasheet for "whatever core this VM got": the peaks are measured (a large
    matmul in the profile's dtype; a streaming read), so fitted efficiencies are relative to what
    this machine can actually do.
    """
    import torch

    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if device.startswith("cuda"):
        spec = datasheet_for_cuda_name(torch.cuda.get_device_name(torch.device(device)))
        if spec is not None:
            return spec
        sync: Callable[[], None] = torch.cuda.synchronize
        mem = float(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    else:
        def sync() -> None:
            return None
        mem = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    dim = 2048 if device.startswith("cuda") else 1024
    a = torch.randn(dim, dim, dtype=tdtype, device=device)
    b = torch.randn(dim, dim, dtype=tdtype, device=device)
    t_mm = _best_seconds(lambda: torch.mm(a, b), sync, 5)
    big = torch.ones(64 * 2**20, dtype=torch.float32, device=device)  # 256 MiB: far beyond caches
    t_rd = _best_seconds(lambda: big.sum(), sync, 5)
    return DeviceSpec(device.split(":")[0], "gpu" if device.startswith("cuda") else "cpu",
                      peak_flops=2.0 * dim**3 / t_mm, mem_bw=big.numel() * 4 / t_rd, memory_bytes=mem,
                      link_bw=0.0, link_latency=0.0,
                      source=f"measured: {dim}^3 {dtype} matmul, 256 MiB streaming read "
                             f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
