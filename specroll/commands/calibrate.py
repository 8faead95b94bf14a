"""`specroll calibrate`: measure the real backend's forward step and fit a cost profile.

    specroll calibrate --model smollm2-135m --device cpu --out calibration/profiles/cpu-smollm2-135m.json
    specroll calibrate --model qwen2.5-0.5b --random-weights --quick --out /tmp/q05.json
    specroll calibrate --refit PROFILE.measurements.parquet --out PROFILE.json   (fit again, no timing)
    specroll calibrate --show h100-sxm:qwen2.5-7b:tp2                          (print a profile)

Writes PROFILE.json, PROFILE.measurements.parquet (raw timings) and PROFILE.fit.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from specroll.core.errors import SpecrollError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="measure forward passes and fit a cost profile (JSON)",
                       description="Time the real backend's decode/verify/prefill step over a grid "
                                   "(batch x query x context, skewed batches), fit the physical cost "
                                   "model, and report its held-out error.")
    p.add_argument("--model", default="smollm2-135m", help="model shape name (default smollm2-135m)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", default=None, help="default: float32 on cpu, bfloat16 on cuda")
    p.add_argument("--random-weights", action="store_true", help="random weights of the model's shape")
    p.add_argument("--quick", action="store_true", help="a small grid (smoke test, ~1 minute on CPU)")
    p.add_argument("--max-batch", type=int, default=None,
                   help="largest batch on the grid (default: the grid's)")
    p.add_argument("--max-ctx", type=int, default=None,
                   help="largest context on the grid, tokens (default: the grid's)")
    p.add_argument("--drafter", default=None, help="also measure this drafter's CPU cost (suffix, ngram)")
    p.add_argument("--stat", default="median", choices=["median", "min"],
                   help="summary of each point's repeats that the fit targets (min: a shared, busy machine)")
    p.add_argument("--step", default="engine", choices=["engine", "forward"],
                   help="what one timed point is: a whole engine iteration (forward, keyed sampling of "
                        "every query position, acceptance, bookkeeping; what the simulator prices) or the "
                        "forward alone (to compare with the hardware floor)")
    p.add_argument("--temperature", type=float, default=0.7,
                   help="sampling temperature of the timed engine iterations (default 0.7)")
    p.add_argument("--seed", type=int, default=0, help="grid order, skewed batches and held-out split")
    p.add_argument("--refit", default=None, metavar="MEASUREMENTS.parquet",
                   help="fit saved measurements again instead of measuring")
    p.add_argument("--show", default=None, metavar="PROFILE", help="print a profile (file or built-in name)")
    p.add_argument("--out", default=None, help="profile JSON to write (required unless --show)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from specroll.calibration import (
        calibrate,
        fit_rows,
        measurements_path,
        plot_fit,
        plot_path,
        read_measurements,
        write_measurements,
    )

    if args.show:
        from specroll.calibration import load_profile
        _summary(load_profile(args.show))
        return 0
    if not args.out:
        raise SpecrollError("missing --out", field="--out", fix="pass --out PROFILE.json")
    out = Path(args.out)
    if out.suffix != ".json":
        raise SpecrollError(f"the profile must be a .json file, got '{out}'", field="--out",
                            fix="pass --out PROFILE.json")
    for name in ("max_batch", "max_ctx"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise SpecrollError(f"must be >= 1, got {v}", field=f"--{name.replace('_', '-')}",
                                fix="pass a positive integer")
    if args.refit:
        rows, shape, dev, dtype = read_measurements(args.refit)
        cal = fit_rows(rows, shape, dev, dtype, seed=args.seed, stat=args.stat,
                       extra={"refit_of": Path(args.refit).name})
    else:
        from specroll.policies import make_drafter
        from specroll.real_backend import make_timing_step

        drafter = make_drafter(args.drafter) if args.drafter else None
        cal = calibrate(args.model, args.device, args.dtype, random_weights=args.random_weights,
                        quick=args.quick, seed=args.seed, max_batch=args.max_batch, max_ctx=args.max_ctx,
                        step_factory=make_timing_step, drafter=drafter, stat=args.stat,
                        temperature=args.temperature, mode=args.step)
    cal.profile.save(out)
    meas = measurements_path(out)
    if not args.refit or Path(args.refit).resolve() != meas.resolve():
        write_measurements(cal.rows, meas, cal.profile)
    png = plot_path(out)
    plot_fit(cal, png)
    _summary(cal.profile)
    print(f"wrote {out}, {meas.name}, {png.name}")
    return 0


def _summary(prof) -> None:
    """One screen: what the profile is, its coefficients, and its held-out error per regime."""
    print(repr(prof))
    c = prof.coefficients
    print(f"  t = {1e3 * c['t_fixed']:.3f} ms + {1e6 * c['t_request']:.1f} us*n"
          f" + {1e6 * c['t_token']:.2f} us*tok"
          f" + roofline(e_bw={c['e_bw']:.3f}, e_f={c['e_f']:.3f}, e_attn={c['e_attn']:.3f}, p={c['p']:.2f});"
          f" ragged a={c['a']:.2f} b={c['b']:.2f}")
    print(f"  device {prof.device.name}: {prof.device.peak_flops / 1e12:.3g} TFLOP/s, "
          f"{prof.device.mem_bw / 1e9:.3g} GB/s ({prof.device.source or 'datasheet'})")
    print(f"  KV capacity {prof.kv_capacity_tokens:,} tokens")
    d = prof.drafter
    if d.get("per_request_s") or d.get("per_token_s"):
        print(f"  drafter {d.get('kind')}: {1e6 * d['per_request_s']:.1f} us/request + "
              f"{1e6 * d['per_token_s']:.2f} us/draft token")
    by = prof.extra.get("heldout_by_regime")
    if prof.heldout_mape is None or not by:
        print("  kind=datasheet: a prediction with no measured error")
        return
    base = prof.extra.get("baseline", {})
    bby = base.get("heldout_by_regime", {})
    print(f"  held-out MAPE {100 * prof.heldout_mape:.2f}% "
          f"(worst {100 * prof.extra['heldout_max_ape']:.1f}%), "
          f"DAS baseline {100 * (base.get('heldout_mape') or float('nan')):.2f}%, "
          f"{prof.extra.get('n_heldout')} of {prof.extra.get('n_measurements')} points held out")
    print(f"  {'regime':<12} {'count':>5} {'MAPE %':>7} {'worst %':>8} {'DAS MAPE %':>10}")
    for name, r in by.items():
        das = bby.get(name, {}).get("mape")
        das_s = f"{100 * das:10.2f}" if das is not None else f"{'-':>10}"
        print(f"  {name:<12} {r['count']:>5} {100 * r['mape']:7.2f} {100 * r['max_ape']:8.1f} {das_s}")
    if prof.ranges:
        print("  measured ranges: " + ", ".join(f"{k} {lo:g}..{hi:g}" for k, (lo, hi) in prof.ranges.items()))
