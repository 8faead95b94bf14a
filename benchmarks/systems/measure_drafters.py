"""Measure the literature drafters on real SmolLM2-135M text (CPU): what the benchmark scenarios
(benchmarks/systems/drafters.py) and docs/systems/drafters.md quote.

Three parts, each printing one table:

- ``--part match``: offline match lengths (``compute_match_lengths``) of the model-free drafters on a
  recorded SmolLM2 rollout trace (default: examples/data/cpu-smollm2-train.parquet, 4 arithmetic
  prompts x 4 samples x 3 steps, T = 0.7, up to 128 tokens): per step the mean m_t, the fraction of
  positions with m_t >= 1, and the per-token acceptance alpha that a drafter drafting ``--k``
  tokens at every position would see (geometric MLE: accepted / (accepted + rejections), the
  simulator's parametric ``alpha``).
- ``--part layerskip``: the layer-skip self-drafter on the real engine (fixed k = ``--k``) for each
  ``--layers`` n and temperature: accepted per drafted token, accepted per iteration, alpha.
- ``--part lossy``: the lossy rules on the real engine (lenient / judge on ``prevrollout`` over two
  steps, entropy-adaptive on layerskip): lossy fraction and acceptance.

`.venv/bin/python benchmarks/systems/measure_drafters.py --part match` takes seconds; the real-engine
parts take minutes on the 2-core CPU (use ``--threads 1`` when the machine is busy).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

TRACE = ROOT / "examples" / "data" / "cpu-smollm2-train.parquet"


def geometric_alpha(accepted: float, failures: float) -> float:
    return accepted / (accepted + failures) if accepted + failures else float("nan")


def mean_run(alpha: float, k: int, width: int = 1) -> float:
    """E[min(M, k)] when M is the longest of ``width`` independent geometric runs of rate alpha (the
    simulator's parametric source: P(M >= j) = 1 - (1 - alpha^j)^width)."""
    return float(sum(1.0 - (1.0 - alpha ** j) ** width for j in range(1, k + 1)))


def alpha_for_mean(mean: float, k: int, width: int = 1) -> float:
    """The parametric alpha whose E[min(M, k)] equals a measured mean accepted run (bisection)."""
    lo, hi = 1e-6, 1 - 1e-6
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_run(mid, k, width) < mean else (lo, mid)
    return (lo + hi) / 2


def match_table(trace_path: Path, k: int, drafters: list[str], kmatch: int = 8) -> list[dict]:
    from specroll.policies import compute_match_lengths
    from specroll.traces import read_trace

    trace = read_trace(trace_path)
    steps = trace.column("step")
    rows = []
    for name in drafters:
        t0 = time.perf_counter()
        out = compute_match_lengths(trace, name)
        wall = time.perf_counter() - t0
        m, off = out.ragged(f"match_{name}")
        lens = np.diff(off)
        step_of = np.repeat(steps, lens)
        # Decoding starts at position 1 and the last token is the target's own: positions 1..L-2.
        pos = np.concatenate([np.arange(n) for n in lens])
        last = np.repeat(lens, lens) - 1
        usable = (pos >= 1) & (pos < last)
        for s in sorted(set(steps.tolist())) + ["all"]:
            sel = usable & ((step_of == s) if s != "all" else True)
            mm = np.minimum(m[sel].astype(np.int64), np.minimum(k, (last - pos)[sel]))
            acc = int(mm.sum())
            fail = int((mm < np.minimum(k, (last - pos)[sel])).sum())
            m8 = np.minimum(m[sel].astype(np.int64), kmatch)
            width = int(out.meta.extra["drafters"][name].get("tree_width", 1))
            rows.append({"drafter": name, "step": s, "positions": int(sel.sum()), "mean_m": float(mm.mean()),
                         "p_m_ge_1": float((mm >= 1).mean()), "alpha": geometric_alpha(acc, fail),
                         "mean_m8": float(m8.mean()), "width": width,
                         "alpha_matched": alpha_for_mean(float(m8.mean()), kmatch, width),
                         "match_wall_s": wall})
    return rows


def tokens_of(res) -> list:
    return res.trace.table.column("token_ids").to_pylist()


def real_runs(part: str, args) -> list[dict]:
    import torch

    from specroll.real_backend import RolloutConfig, load_backend, rollout

    if args.threads:
        torch.set_num_threads(args.threads)
    base = dict(model="smollm2-135m", prompts=args.prompts, samples=args.samples, max_new_tokens=args.max_new,
                max_batch=args.prompts * args.samples, seed=args.seed)
    backend = load_backend(RolloutConfig(**base))
    runs = []
    if part == "layerskip":
        for temp in args.temperatures:
            ar = rollout(RolloutConfig(**base, steps=1, temperature=temp, policy="ar", drafter="none"),
                         backend=backend)
            runs.append(("ar", temp, None, ar, ar))
            for n in args.layers:
                res = rollout(RolloutConfig(**base, steps=1, temperature=temp, policy="fixed",
                                            params={"k": args.k}, drafter="layerskip",
                                            drafter_params={"layers": n, "kmax": args.k}), backend=backend)
                runs.append((f"layerskip n={n}", temp, n, res, ar))
    else:
        temp = 0.7
        ar = rollout(RolloutConfig(**base, steps=2, temperature=temp, policy="ar", drafter="none"),
                     backend=backend)
        runs.append(("ar", temp, None, ar, ar))
        for accept, params, drafter, dparams in [
            ("exact", {}, "prevrollout", {"kmax": 16}),
            ("lenient", {"lenience": 2.0}, "prevrollout", {"kmax": 16}),
            ("lenient", {"lenience": 4.0}, "prevrollout", {"kmax": 16}),
            ("exact", {}, "suffix", {}),
            ("judge", {"top_k": 4, "tau": 0.25}, "suffix", {}),
            ("exact", {}, "layerskip", {"layers": 15, "kmax": 8}),
            ("ead", {"threshold": 1.0, "window": 4}, "layerskip", {"layers": 15, "kmax": 8}),
            ("ead", {"threshold": 2.0, "window": 4}, "layerskip", {"layers": 15, "kmax": 8}),
        ]:
            k = dparams.get("kmax", 8)
            res = rollout(RolloutConfig(**base, steps=2, temperature=temp, policy="fixed", params={"k": k},
                                        drafter=drafter, drafter_params=dparams, accept=accept,
                                        accept_params=params), backend=backend)
            runs.append((f"{drafter} {accept} {params}", temp, None, res, ar))
    rows = []
    for label, temp, n, res, ar in runs:
        s = res.summary
        steps = s["steps"] if part == "lossy" else s["steps"]
        drafted = sum(st["drafted"] for st in steps)
        accepted = sum(st["accepted"] for st in steps)
        decode = [r for r in res.iterations if r["phase"] == "decode"]
        fail = sum(1 for d in res.decisions if d["k"] > 0 and d["accepted"] < d["k"])
        same = tokens_of(res) == tokens_of(ar)
        rows.append({"run": label, "T": temp, "layers": n, "tokens": s["tokens"],
                     "iterations": s["iterations"],
                     "accepted_per_drafted": accepted / drafted if drafted else float("nan"),
                     "accepted_per_iteration": s["accepted_per_iteration"],
                     # per request per verification (an engine iteration verifies every active request)
                     "accepted_per_request_iteration": accepted / max(1, len(res.decisions)),
                     "alpha": geometric_alpha(accepted, fail),
                     "lossy_fraction": s["lossy_fraction"], "equals_ar": same,
                     # a lossy rule met a mismatch lossy + fail times and accepted it lossy times
                     "p_mismatch_accepted": (s["lossy_tokens"] / (s["lossy_tokens"] + fail)
                                             if s["lossy_tokens"] + fail else 0.0),
                     "drafted_share": accepted / s["tokens"] if s["tokens"] else 0.0,
                     "run_tokens": accepted / max(1, sum(1 for d in res.decisions if d["accepted"] > 0)),
                     "wall_s": s["total_wall_s"], "ar_wall_s": ar.summary["total_wall_s"],
                     "draft_wall_s": sum(r["draft_wall_s"] for r in decode)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("match", "layerskip", "lossy"), default="match")
    ap.add_argument("--trace", default=str(TRACE))
    ap.add_argument("--drafters", nargs="+", default=["suffix", "omni", "stand", "prevrollout"])
    ap.add_argument("--k", type=int, default=4, help="draft depth (match alpha, layerskip fixed k)")
    ap.add_argument("--layers", type=int, nargs="+", default=[8, 15, 22])
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.7, 0.0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--max-new", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("SPECROLL_PROGRESS", "0")
    load = os.getloadavg()
    if args.part == "match":
        rows = match_table(Path(args.trace), args.k, args.drafters)
        print(f"match lengths on {args.trace} (k = {args.k}; load average {load[0]:.2f})")
        print(f"{'drafter':>12} {'step':>4} {'positions':>9} {'mean m':>7} {'P(m>=1)':>8} {'alpha':>6} "
              f"{'mean m|8':>8} {'w':>2} {'alpha=':>6}")
        for r in rows:
            print(f"{r['drafter']:>12} {r['step']!s:>4} {r['positions']:>9} {r['mean_m']:>7.3f} "
                  f"{r['p_m_ge_1']:>8.3f} {r['alpha']:>6.3f} {r['mean_m8']:>8.3f} {r['width']:>2} "
                  f"{r['alpha_matched']:>6.3f}")
        print(f"mean m, P(m>=1), alpha: at k = {args.k} (alpha = accepted / (accepted + rejections)); "
              "mean m|8: at k = 8; alpha=: the parametric alpha (w branches) with that mean at kmax 8")
        return 0
    rows = real_runs(args.part, args)
    print(f"{args.part} on SmolLM2-135M CPU: {args.prompts} prompts x {args.samples} samples, "
          f"<= {args.max_new} tokens, seed {args.seed}, k = {args.k} (load average before: "
          f"{load[0]:.2f}, after: {os.getloadavg()[0]:.2f})")
    print(f"{'run':>52} {'T':>4} {'tokens':>6} {'iters':>5} {'acc/draft':>9} {'acc/iter':>8} {'acc/req':>7} "
          f"{'alpha':>6} "
          f"{'lossy':>6} {'=AR':>4} {'wall s':>7} {'AR s':>6} {'draft s':>7} {'p(mis)':>6} {'share':>5} "
          f"{'run':>5}")
    for r in rows:
        print(f"{r['run']:>52} {r['T']:>4} {r['tokens']:>6} {r['iterations']:>5} "
              f"{r['accepted_per_drafted']:>9.3f} "
              f"{r['accepted_per_iteration']:>8.3f} {r['accepted_per_request_iteration']:>7.3f} "
              f"{r['alpha']:>6.3f} {r['lossy_fraction']:>6.3f} "
              f"{'yes' if r['equals_ar'] else 'no':>4} {r['wall_s']:>7.1f} {r['ar_wall_s']:>6.1f} "
              f"{r['draft_wall_s']:>7.1f} {r['p_mismatch_accepted']:>6.3f} {r['drafted_share']:>5.3f} "
              f"{r['run_tokens']:>5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
