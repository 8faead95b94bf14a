"""One calibration run: measure the grid, fit, build the profile, write profile + raw data + plot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specroll.calibration._costmodel import DTYPE_BYTES, make_consts
from specroll.calibration._devices import DeviceSpec
from specroll.calibration._drafter_cost import measure_drafter_cost
from specroll.calibration._fit import FEATURES, FitResult, fit_profile_coefficients
from specroll.calibration._measure import TimingStep, build_grid, grid_spec, measure_grid, measure_peaks
from specroll.calibration._profile import CostProfile
from specroll.core.errors import SpecrollError
from specroll.core.fileio import atomic_path
from specroll.core.plotting import save_png, subplots
from specroll.core.progress import say
from specroll.core.shapes import ModelShape


@dataclass
class Calibration:
    profile: CostProfile
    rows: list[dict]
    fit: FitResult


def calibrate(model: str, device: str = "cpu", dtype: str | None = None, *, random_weights: bool = False,
              quick: bool = False, seed: int = 0, max_batch: int | None = None, max_ctx: int | None = None,
              step_factory: Callable[..., TimingStep],
              peaks: DeviceSpec | None = None, drafter: Any = None,
              stat: str = "median", temperature: float | None = 0.7, mode: str = "engine") -> Calibration:
    """Measure ``model`` on ``device`` through a timing step and fit a profile.

    ``step_factory(model=, device=, dtype=, max_batch=, max_ctx=, random_weights=, temperature=,
    mode=)`` builds the timing step (the real backend's ``make_timing_step``; the caller passes it
    in, since the cost model sits below the engine). ``drafter``: a drafter object whose host-side
    cost is measured and priced in the profile (None: none).

    ``mode="engine"`` times whole engine iterations (forward, keyed sampling at ``temperature``,
    acceptance, bookkeeping: what the simulator prices); ``mode="forward"`` the forward alone.
    """
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    if dtype not in DTYPE_BYTES:
        raise SpecrollError(f"unknown dtype '{dtype}'", field="--dtype",
                            fix="use float32, bfloat16 or float16")
    if not (device == "cpu" or device.startswith("cuda")):
        raise SpecrollError(f"unknown device '{device}'", field="--device", fix="use cpu or cuda")
    spec = grid_spec(device, quick)
    max_batch = max_batch or max(spec.batch_sizes)
    max_ctx = max_ctx or (max(spec.contexts) + max(spec.query_lens))
    grid = build_grid(spec, max_batch, max_ctx, seed=seed)
    if len(grid) < 10:
        raise SpecrollError(f"only {len(grid)} grid points fit max_batch={max_batch}, max_ctx={max_ctx}",
                            field="--max-batch", fix="raise --max-batch / --max-ctx")
    say(f"calibrate: loading {model} on {device} ({dtype}{', random weights' if random_weights else ''})")
    step = step_factory(model=model, device=device, dtype=dtype, max_batch=max_batch, max_ctx=max_ctx,
                   random_weights=random_weights, temperature=temperature, mode=mode)
    shape: ModelShape = step.shape
    say(f"calibrate: device peaks on {device}")
    dev = peaks or measure_peaks(device, dtype)
    say(f"calibrate: {len(grid)} grid points x ({spec.warmup} warm-up + {spec.repeats} repeats)")
    rows = measure_grid(step, grid, spec.warmup, spec.repeats)
    del step  # free the model before the drafter benchmark
    import torch

    cal = fit_rows(rows, shape, dev, dtype, seed=seed, stat=stat,
                   extra={"random_weights": random_weights, "quick": quick,
                          "timed_step": mode,
                          "sampling_temperature": temperature if mode == "engine" else None,
                          "torch_threads": torch.get_num_threads(),
                          "grid": {"max_batch": max_batch, "max_ctx": max_ctx, "warmup": spec.warmup,
                                   "repeats": spec.repeats}})
    if drafter:
        cal.profile.drafter = drafter_cost(drafter)
    return cal


def drafter_cost(drafter: Any) -> dict[str, Any]:
    """Measured host-side cost of a model-free drafter object (``policies.make_drafter(name)``)."""
    say(f"calibrate: drafter '{drafter.name}' cost")
    return measure_drafter_cost(drafter)


STATS = {"median": "seconds", "min": "seconds_min"}


def fit_rows(rows: list[dict], shape: ModelShape, dev: DeviceSpec, dtype: str, *, seed: int = 0,
             stat: str = "median", extra: dict[str, Any] | None = None) -> Calibration:
    """Fit a measured profile to measurement rows (from measure_grid or a saved Parquet).

    ``stat`` picks what each point's repeats are summarised by: the median (default), or the minimum,
    which estimates the uncontended cost when other processes share the machine.
    """
    if stat not in STATS:
        raise SpecrollError(f"unknown statistic '{stat}'", field="--stat", fix="use median or min")
    X = {f: np.array([r[f] for r in rows], dtype=np.float64) for f in FEATURES}
    t = np.array([r[STATS[stat]] for r in rows], dtype=np.float64)
    if not np.all(np.isfinite(t)) or (t <= 0).any():
        raise SpecrollError("measured seconds must be finite and > 0", field=STATS[stat],
                            fix="re-run specroll calibrate")
    consts = make_consts(shape, dev, 1, DTYPE_BYTES[dtype])
    fit = fit_profile_coefficients(X, t, consts, seed=seed)
    ranges = {k: [float(X[k].min()), float(X[k].max())] for k in ("n", "q_max", "c_max")}
    profile = CostProfile(
        shape=shape, device=dev, dtype=dtype, tp=1, kind="measured", coefficients=fit.coefficients,
        heldout_mape=fit.heldout_mape, ranges=ranges,
        extra={"heldout_max_ape": fit.heldout_max_ape, "heldout_by_regime": fit.heldout_by_regime,
               "train_mape": fit.train_mape, "baseline": fit.baseline,
               "n_measurements": len(rows), "n_heldout": fit.n_test, "fit_seed": seed, "fit_stat": stat,
               "backend": _backend_version(), **(extra or {})})
    for r, pred, held in zip(rows, fit.predicted, fit.test_mask):
        r["predicted"] = float(pred)
        r["heldout"] = bool(held)
    return Calibration(profile, rows, fit)


def _backend_version() -> str:
    import torch

    from specroll.core import __version__
    return f"specroll {__version__} real_backend timing step, torch {torch.__version__}"


def measurements_path(profile_path: str | Path) -> Path:
    p = Path(profile_path)
    return p.with_name(p.stem + ".measurements.parquet")


def plot_path(profile_path: str | Path) -> Path:
    p = Path(profile_path)
    return p.with_name(p.stem + ".fit.png")


def write_measurements(rows: list[dict], path: str | Path, profile: CostProfile | None = None) -> Path:
    """Raw measurements; the Parquet metadata keeps shape, device and dtype so a refit needs nothing else."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows)
    if profile is not None:
        meta = {"shape": profile.shape.to_dict(), "device": profile.device.to_dict(), "dtype": profile.dtype}
        table = table.replace_schema_metadata({"specroll_calibration": json.dumps(meta)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_measurements(path: str | Path) -> tuple[list[dict], ModelShape, DeviceSpec, str]:
    """Rows plus the shape, device and dtype they were measured with."""
    import json

    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise SpecrollError("measurements file not found", file=path, fix="check the path")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise SpecrollError(f"not a Parquet file ({exc})", file=path,
                            fix="pass *.measurements.parquet") from None
    raw = (table.schema.metadata or {}).get(b"specroll_calibration")
    if raw is None:
        raise SpecrollError("no calibration metadata", file=path, field="specroll_calibration",
                            fix="pass a *.measurements.parquet written by specroll calibrate")
    meta = json.loads(raw)
    try:
        shape = ModelShape(**meta["shape"])
    except (TypeError, KeyError) as exc:
        raise SpecrollError(f"bad model shape ({exc})", file=path, field="shape",
                            fix="re-run specroll calibrate") from None
    dev = DeviceSpec.from_dict(meta.get("device"), file=str(path))
    rows = table.to_pylist()
    for col in (*FEATURES, "seconds"):
        if not rows or col not in rows[0]:
            raise SpecrollError("missing column", file=path, field=col,
                                fix="pass a *.measurements.parquet written by specroll calibrate")
    return rows, shape, dev, str(meta.get("dtype", "float32"))


def plot_fit(cal: Calibration, path: str | Path) -> Path:
    """Measured vs predicted (log-log), physical model beside the DAS-style baseline."""

    rows = cal.rows
    meas = np.array([r[STATS[cal.profile.extra.get("fit_stat", "median")]] for r in rows]) * 1e3
    pred = np.array([r["predicted"] for r in rows]) * 1e3
    held = np.array([r["heldout"] for r in rows])
    kinds = np.array([r.get("kind", "point") for r in rows])
    base = cal.fit.baseline
    q_sum = np.array([r["q_sum"] for r in rows])
    pred_base = (base["c_base"] + base["c_tok"] * q_sum) * 1e3
    fig, axes = subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
    lo, hi = meas.min() * 0.8, meas.max() * 1.25
    panels = ((axes[0], pred, f"physical model: held-out MAPE {100 * cal.fit.heldout_mape:.1f}%"),
              (axes[1], pred_base,
               f"DAS t = c0 + c1*tokens: held-out MAPE {100 * base['heldout_mape']:.1f}%"))
    for ax, p, title in panels:
        for kind in sorted(set(kinds)):
            m = kinds == kind
            ax.scatter(meas[m & ~held], p[m & ~held], s=10, alpha=0.35, label=f"{kind} (fit)")
            ax.scatter(meas[m & held], p[m & held], s=28, marker="x", label=f"{kind} (held out)")
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("measured ms")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("predicted ms")
    axes[0].legend(fontsize=7, ncol=2)
    prof = cal.profile
    fig.suptitle(f"{prof.model} on {prof.device.name} ({prof.dtype}): one forward step", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
    return Path(path)
