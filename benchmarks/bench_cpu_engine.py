"""The CPU engine against this machine's floors: decode/verify iteration times per batch size and
query length, and the verify/decode cost ratio that decides where speculation can pay.

    .venv/bin/python benchmarks/bench_cpu_engine.py [--ctx 256] [--repeats 5]
                                                    [--out docs/results/cpu_engine.json]

Floors (measured here, since no datasheet describes whatever cores a VM gets):
- bandwidth: a 256 MiB float32 streaming read (``sum``) with the process's threads; the memory
  floor of a decode is the model's weight bytes over it (KV bytes added per row and context);
- matmul peak: a 2048^3 float32 matmul; the compute floor of an iteration is its linear FLOPs
  (2 x parameters per query token, LM head included) plus attention FLOPs over that peak.

Step times are whole engine iterations (``real_backend.make_timing_step``, mode ``engine``:
forward, keyed sampling of every query position at T = 0.7, acceptance, bookkeeping), the quantity
the cost profile prices; decodes (q = 1) are also timed as the forward alone (mode ``forward``).
Each point is the minimum of ``--repeats`` runs taken in passes over the whole grid (a burst of
load from another process spoils one run, not a point); the load average is recorded before and
after every pass.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._meta import finish, run_meta  # noqa: E402
from specroll.core.fileio import write_json  # noqa: E402

BATCHES = (1, 2, 4, 8, 12, 16)
QUERIES = tuple(range(1, 10))


def _best(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def floors(reps: int = 10) -> dict[str, float]:
    """Streaming-read bandwidth (bytes/s) and float32 matmul peak (FLOP/s) of this machine."""
    big = torch.ones(64 * 2**20, dtype=torch.float32)
    bw = big.numel() * 4 / _best(lambda: big.sum(), reps)
    dim = 2048
    a, b = torch.randn(dim, dim), torch.randn(dim, dim)
    peak = 2.0 * dim**3 / _best(lambda: torch.mm(a, b), reps)
    return {"mem_bw": bw, "matmul_flops": peak, "threads": torch.get_num_threads()}


def model_floors(shape, n: int, q: int, ctx: int, bw: float, peak: float) -> dict[str, float]:
    """Memory and compute floors of one iteration of n rows x q query tokens over ctx cached."""
    w_bytes = shape.weight_bytes(4)
    kv = n * ctx * shape.kv_bytes_per_token(4)
    tokens = n * q
    lin = shape.linear_flops_per_token() * tokens
    att = shape.attention_flops_per_pair() * n * q * (ctx + (q + 1) / 2)
    return {"memory_floor_s": (w_bytes + kv) / bw, "compute_floor_s": (lin + att) / peak,
            "weight_bytes": w_bytes, "flops": lin + att}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ctx", type=int, default=256, help="cached tokens per row")
    ap.add_argument("--repeats", type=int, default=5, help="passes over the grid (min taken)")
    ap.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    ap.add_argument("--queries", type=int, nargs="+", default=list(QUERIES))
    ap.add_argument("--out", default="docs/results/cpu_engine.json")
    args = ap.parse_args()
    meta = run_meta()
    from specroll.real_backend import make_timing_step

    max_b, max_q = max(args.batches), max(args.queries)
    fl = floors()
    print(f"threads {fl['threads']}  stream read {fl['mem_bw'] / 1e9:.1f} GB/s  "
          f"matmul {fl['matmul_flops'] / 1e9:.0f} GFLOP/s  load {os.getloadavg()[0]:.2f}")
    steps = {m: make_timing_step(mode=m, max_batch=max_b, max_ctx=args.ctx + max_q + 64)
             for m in ("engine", "forward")}
    shape = steps["engine"].shape
    points = [("engine", n, q) for n in args.batches for q in args.queries]
    points += [("forward", n, 1) for n in args.batches]
    for mode, n, q in points[:3]:  # warm-up (allocations, first-call dispatch)
        steps[mode].run([q] * n, [args.ctx] * n)
    times: dict[tuple[str, int, int], float] = {}
    loads = []
    for _ in range(args.repeats):
        before = os.getloadavg()[0]
        for mode, n, q in points:
            t = steps[mode].run([q] * n, [args.ctx] * n)
            times[mode, n, q] = min(t, times.get((mode, n, q), float("inf")))
        loads.append([before, os.getloadavg()[0]])
    rows = []
    for n in args.batches:
        decode = times["engine", n, 1]
        for q in args.queries:
            t = times["engine", n, q]
            rows.append({"batch": n, "q": q, "engine_s": t, "ratio_to_decode": t / decode,
                         **model_floors(shape, n, q, args.ctx, fl["mem_bw"], fl["matmul_flops"])})
        rows[-len(args.queries)]["forward_s"] = times["forward", n, 1]
    print(f"{'batch':>5} {'q':>3} {'engine ms':>10} {'x decode':>9} {'mem floor':>10} {'cmp floor':>10}")
    for r in rows:
        print(f"{r['batch']:>5} {r['q']:>3} {r['engine_s'] * 1e3:>10.1f} {r['ratio_to_decode']:>9.2f} "
              f"{r['memory_floor_s'] * 1e3:>10.1f} {r['compute_floor_s'] * 1e3:>10.1f}"
              + (f"  forward {r['forward_s'] * 1e3:.1f} ms" if "forward_s" in r else ""))
    out = {"meta": finish(meta), "ctx": args.ctx, "repeats": args.repeats, "stat": "min",
           "floors": fl, "pass_loads": loads, "rows": rows}
    write_json(Path(args.out), out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
