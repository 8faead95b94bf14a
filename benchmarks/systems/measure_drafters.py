"""Measure the literature drafters' acceptance on real SmolLM2-135M text (CPU) and write the rates the
benchmark scenarios read (benchmarks/systems/drafters.py; docs/systems/drafters.md), each with a 95 %
bootstrap interval over prompts (rollouts of one prompt are correlated, so prompts are resampled).

Three parts, each one table:

- ``match``: an AR rollout trace is recorded (``--prompts`` x ``--samples`` x ``--steps``, T = 0.7,
  up to ``--max-new`` tokens), then the model-free drafters' offline match lengths
  (``compute_match_lengths``) on its last step (the earlier steps are the history): the mean
  accepted run at kmax 8 and the parametric alpha with that mean (the simulator's ``alpha``; for
  stand, per branch of 3).
- ``layerskip``: the layer-skip self-drafter on the real engine (fixed k = 4, T = 0.7) for each
  ``--layers`` n: per-token acceptance (geometric MLE: accepted / (accepted + rejections)).
- ``lossy``: the lossy rules on the real engine over two steps (T = 0.7): the judge (top_k 4,
  tau 0.25) on the suffix drafter's drafts and SPEC-RL lenience 2 on the previous rollout (share of
  the mismatches met that were accepted); entropy-adaptive decoding on layers 15/30 (threshold
  1 bit, window 4, k 8): share of tokens from the small model, mean run, share of those differing.

    .venv/bin/python benchmarks/systems/measure_drafters.py --out docs/results/drafter_rates.json

takes about 10-20 minutes on the 2-core CPU (``--parts match`` alone: a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # the benchmarks package; specroll comes from the install

from benchmarks._meta import finish, run_meta  # noqa: E402

OUT = "docs/results/drafter_rates.json"
KMATCH = 8
T = 0.7


def mean_run(alpha: np.ndarray | float, k: int, width: int = 1) -> np.ndarray:
    """E[min(M, k)] when M is the longest of ``width`` independent geometric runs of rate alpha (the
    simulator's parametric source: P(M >= j) = 1 - (1 - alpha^j)^width)."""
    a = np.asarray(alpha, dtype=np.float64)
    return sum(1.0 - (1.0 - a ** j) ** width for j in range(1, k + 1))


def alpha_for_mean(mean: np.ndarray | float, k: int, width: int = 1) -> np.ndarray:
    """The parametric alpha whose E[min(M, k)] equals a measured mean accepted run (bisection,
    vectorized over bootstrap replicates)."""
    m = np.asarray(mean, dtype=np.float64)
    lo, hi = np.full_like(m, 1e-6), np.full_like(m, 1 - 1e-6)
    for _ in range(60):
        mid = (lo + hi) / 2
        below = mean_run(mid, k, width) < m
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


def bootstrap(per_prompt: np.ndarray, stat: Callable[[np.ndarray], np.ndarray], n: int,
              seed: int) -> dict[str, float]:
    """``stat`` of the column sums of ``per_prompt`` (prompts x sufficient statistics), and the 2.5 /
    97.5 percentiles of it over ``n`` resamples of the prompts with replacement."""
    rng = np.random.default_rng(seed)
    est = float(stat(per_prompt.sum(axis=0)[None, :])[0])
    idx = rng.integers(0, len(per_prompt), size=(n, len(per_prompt)))
    reps = stat(per_prompt[idx].sum(axis=1))
    lo, hi = np.nanpercentile(reps, [2.5, 97.5])
    return {"value": est, "ci95": [float(lo), float(hi)], "prompts": int(len(per_prompt))}


def _ratio(num: int, den: int) -> Callable[[np.ndarray], np.ndarray]:
    def f(s: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return s[:, num] / s[:, den]
    return f


def match_part(trace: Any, drafters: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from specroll.policies import compute_match_lengths

    steps = np.asarray(trace.column("step"))
    prompts = np.asarray(trace.column("prompt_id"))
    last_step = int(steps.max())
    out: dict[str, Any] = {}
    for name in drafters:
        res = compute_match_lengths(trace, name)
        m, off = res.ragged(f"match_{name}")
        lens = np.diff(off)
        width = int(res.meta.extra["drafters"][name].get("tree_width", 1))
        # Decoding starts at position 1 and the last token is the target's own: positions 1..L-2.
        pos = np.concatenate([np.arange(n) for n in lens])
        last = np.repeat(lens, lens) - 1
        row_prompt = np.repeat(prompts, lens)
        sel = (pos >= 1) & (pos < last) & (np.repeat(steps, lens) == last_step)
        m8 = np.minimum(m.astype(np.int64), KMATCH)
        per = np.zeros((int(prompts.max()) + 1, 2))
        np.add.at(per, (row_prompt[sel], 0), m8[sel])
        np.add.at(per, (row_prompt[sel], 1), 1)
        per = per[per[:, 1] > 0]

        def alpha(s: np.ndarray, width: int = width) -> np.ndarray:
            return alpha_for_mean(s[:, 0] / s[:, 1], KMATCH, width)

        out[name] = {"alpha_matched": bootstrap(per, alpha, args.boot, args.seed),
                     "mean_run_k8": bootstrap(per, _ratio(0, 1), args.boot, args.seed),
                     "tree_width": width, "positions": int(per[:, 1].sum())}
    return out


def _per_prompt(res: Any, columns: Callable[[dict[str, Any]], list[float]], n_prompts: int, samples: int,
                width: int) -> np.ndarray:
    """Per-prompt sums of ``columns(decision)`` over the run's decode decisions."""
    per = np.zeros((n_prompts, width))
    for d in res.decisions:
        per[(d["rid"] % (n_prompts * samples)) // samples] += columns(d)
    return per


def _failed(d: dict[str, Any]) -> float:
    return float(d["k"] > 0 and d["accepted"] < d["k"])


def real_parts(parts: list[str], args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    import torch

    from specroll.real_backend import RolloutConfig, load_backend, rollout

    if args.threads:
        torch.set_num_threads(args.threads)
    n, g = args.prompts, args.samples
    base = dict(model="smollm2-135m", prompts=n, samples=g, max_new_tokens=args.max_new, max_batch=n * g,
                seed=args.seed, temperature=T)
    backend = load_backend(RolloutConfig(**base))

    def run(steps: int, **kw: Any) -> Any:
        print(f"  run: {kw or 'ar'} ({steps} steps)", flush=True)
        return rollout(RolloutConfig(**base, steps=steps, **kw), backend=backend)

    out: dict[str, Any] = {}
    ar = run(args.steps, policy="ar", drafter="none")
    if "match" in parts:
        out["match"] = match_part(ar.trace, args.drafters, args)
    if "layerskip" in parts:
        out["layerskip"] = {}
        for layers in args.layers:
            res = run(1, policy="fixed", params={"k": 4}, drafter="layerskip",
                      drafter_params={"layers": layers, "kmax": 4})
            per = _per_prompt(res, lambda d: [d["accepted"], d["accepted"] + _failed(d)], n, g, 2)
            out["layerskip"][str(layers)] = {"alpha": bootstrap(per, _ratio(0, 1), args.boot, args.seed)}
    if "lossy" in parts:
        lossy: dict[str, Any] = {}
        for name, kw in [
            ("judge", dict(drafter="suffix", accept="judge", accept_params={"top_k": 4, "tau": 0.25})),
            ("lenient2", dict(drafter="prevrollout", drafter_params={"kmax": 16}, accept="lenient",
                              accept_params={"lenience": 2.0})),
        ]:
            k = kw.get("drafter_params", {}).get("kmax", 8)
            res = run(2, policy="fixed", params={"k": k}, **kw)
            # A lossy rule met lossy + failed mismatches and accepted `lossy` of them.
            per = _per_prompt(res, lambda d: [d["lossy"], d["lossy"] + _failed(d)], n, g, 2)
            lossy[name] = {"p_mismatch_accepted": bootstrap(per, _ratio(0, 1), args.boot, args.seed)}
        res = run(2, policy="fixed", params={"k": 8}, drafter="layerskip",
                  drafter_params={"layers": 15, "kmax": 8}, accept="ead",
                  accept_params={"threshold": 1.0, "window": 4})
        # columns: accepted, emitted tokens, runs (decisions with a draft accepted), lossy
        per = _per_prompt(res, lambda d: [d["accepted"], d["accepted"] + 1, float(d["accepted"] > 0),
                                          d["lossy"]], n, g, 4)
        lossy["ead"] = {"fraction": bootstrap(per, _ratio(0, 1), args.boot, args.seed),
                        "run_tokens": bootstrap(per, _ratio(0, 2), args.boot, args.seed),
                        "disagree": bootstrap(per, _ratio(3, 0), args.boot, args.seed)}
        out["lossy"] = lossy
    return out, ar


def _fmt(e: dict[str, Any]) -> str:
    lo, hi = e["ci95"]
    return f"{e['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def print_table(data: dict[str, Any]) -> None:
    for name, r in data.get("match", {}).items():
        print(f"match  {name:>12}: alpha {_fmt(r['alpha_matched'])}, mean run|8 {_fmt(r['mean_run_k8'])}, "
              f"w {r['tree_width']}, {r['positions']} positions")
    for layers, r in data.get("layerskip", {}).items():
        print(f"layerskip {layers:>9}: alpha {_fmt(r['alpha'])}")
    for name, r in data.get("lossy", {}).items():
        print(f"lossy  {name:>12}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in r.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", choices=("match", "layerskip", "lossy"),
                    default=["match", "layerskip", "lossy"])
    ap.add_argument("--drafters", nargs="+", default=["suffix", "omni", "stand", "prevrollout"])
    ap.add_argument("--layers", type=int, nargs="+", default=[8, 15, 22])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="steps of the recorded AR trace (match part)")
    ap.add_argument("--max-new", type=int, default=96)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=OUT, help="JSON to write (repository-relative or absolute)")
    args = ap.parse_args(argv)
    os.environ.setdefault("SPECROLL_PROGRESS", "0")
    m = run_meta(["benchmarks/systems/measure_drafters.py", *(sys.argv[1:] if argv is None else argv)])
    results, _ = real_parts(args.parts, args)
    m = finish(m)
    data = {"meta": m, "model": "smollm2-135m", "device": "cpu", "temperature": T, "prompts": args.prompts,
            "samples": args.samples, "steps": args.steps, "max_new_tokens": args.max_new, "seed": args.seed,
            "bootstrap": args.boot, **results}
    print_table(data)
    out = Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
