"""Report figures for simulations, plans and cross-run comparisons (matplotlib's object API, PNG).

Every function draws one PNG at ``png`` (written atomically, without a timestamp in its metadata
so the same inputs give the same bytes) and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from specroll.core.plotting import colormap, save_png, subplots

DPI = 110
PHASE_COLORS = {"busy": "#4477aa", "idle": "#aac4e0", "train": "#ee7733", "sync": "#bbbbbb"}


def plain_log_ticks(axis: Any, base: int = 10) -> None:
    """Log-axis tick labels as plain numbers (4, 16, 0.5) instead of 2^2 / 4x10^0."""
    from matplotlib import ticker

    def minor(v: float, _: Any) -> str:
        # label 2x and 5x ticks only on a short axis (over many decades they collide)
        lo, hi = sorted(axis.get_view_interval())
        short = lo > 0 and np.log10(hi / lo) <= 2.5
        return f"{v:g}" if short and f"{v:g}"[0] in "25" else ""

    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter() if base == 2 else ticker.FuncFormatter(minor))


def count_ticks(ax: Any, top: float) -> None:
    """Integer y ticks 0, 1, 2, 4, 8, ... for a symlog count axis."""
    from matplotlib import ticker

    ticks = [0] + [2 ** i for i in range(0, max(1, int(np.ceil(np.log2(max(top, 1)))) + 1))]
    ax.yaxis.set_major_locator(ticker.FixedLocator(ticks))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(ticker.NullLocator())


def save(fig: Any, png: Path) -> Path:
    return save_png(fig, png, dpi=DPI)


def sim_breakdown(steps: Sequence[dict[str, Any]], engines: int, png: Path) -> Path:
    """Per RL step: the rollout phase split into the mean engine's busy and idle (waiting for the
    step's last rollout) time, then training and weight sync; busy share annotated."""
    x = np.array([int(s.get("step", i)) for i, s in enumerate(steps)])
    rollout = np.array([float(s.get("rollout_s", 0.0)) for s in steps])
    busy_frac = np.array([float(s.get("gpu_busy_fraction", np.nan)) for s in steps])
    known = np.isfinite(busy_frac)
    busy = np.where(known, rollout * np.nan_to_num(busy_frac), rollout)
    idle = rollout - busy
    train = np.array([float(s.get("train_s", 0.0)) for s in steps])
    sync = np.array([float(s.get("sync_s", 0.0)) for s in steps])
    fig, ax = subplots(figsize=(7.5, 4.0))
    width = 0.7 if len(x) > 1 else 0.4
    bottom = np.zeros(len(x))
    for vals, key, label in ((busy, "busy", "rollout: engine busy (mean engine)"),
                             (idle, "idle", "rollout: engine idle, waiting for the step's last rollout"),
                             (train, "train", "train"), (sync, "sync", "weight sync")):
        if vals.any():
            ax.bar(x, vals, width, bottom=bottom, color=PHASE_COLORS[key], label=label)
        bottom += vals
    if len(x) <= 24:
        for xi, b, f in zip(x, busy, busy_frac):
            if np.isfinite(f) and b > 0.06 * bottom.max():
                ax.text(xi, b / 2, f"{100 * f:.0f} %\nbusy", ha="center", va="center", fontsize=9, color="w",
                        fontweight="bold")
    ax.set_xlabel("RL step")
    ax.set_ylabel("time (s)")
    ax.set_xticks(x if len(x) <= 24 else ax.get_xticks())
    ax.set_ylim(0, bottom.max() * 1.32 if bottom.max() > 0 else 1)
    ax.set_title(f"Where each step's time goes ({engines} engines)", fontsize=11)
    ax.legend(fontsize=8, loc="upper left", ncols=2, frameon=False)
    fig.tight_layout()
    return save(fig, png)


def _grid_mean(curves: list[tuple[np.ndarray, np.ndarray]], t_end: float, n: int = 600) -> tuple:
    """Mean over engines of step functions (t, y) (y holds from t[i] to t[i+1]; 0 after the end)."""
    grid = np.linspace(0.0, t_end, n)
    total = np.zeros(n)
    for t, y in curves:
        idx = np.searchsorted(t, grid, side="right") - 1
        total += np.where(idx >= 0, y[np.clip(idx, 0, len(y) - 1)], 0.0)
    return grid, total / max(len(curves), 1)


def sim_batch(eng: dict[str, np.ndarray], step_t0: dict[int, float], rollout_s: dict[int, float],
              png: Path, *, max_steps: int = 3, max_engines: int = 12) -> Path:
    """Active batch size over time per engine, one panel per RL step side by side (at most
    ``max_steps``, spread over the run), and the mean over all engines: the long tail of a
    synchronous step. Meant to span the page's width."""
    steps = np.unique(eng["step"])
    if len(steps) > max_steps:
        steps = steps[np.unique(np.linspace(0, len(steps) - 1, max_steps).round().astype(int))]
    # 15 in wide: shown across the page at the same scale (font size) as the half-width figures
    fig, axes = subplots(1, len(steps), figsize=(15, 4.2), squeeze=False)
    cmap = colormap("tab20")
    top = float(eng["batch_size"].max()) if len(eng["batch_size"]) else 1.0
    for ax, s in zip(axes[0], steps.tolist()):
        sel = eng["step"] == s
        engines = np.unique(eng["engine"][sel])
        shown = set(engines[np.unique(np.linspace(0, len(engines) - 1, min(max_engines, len(engines)))
                                      .round().astype(int))].tolist())
        t0 = step_t0.get(s, float((eng["time_s"][sel] - eng["iter_time_s"][sel]).min()))
        curves, t_end = [], 0.0
        for j, e in enumerate(engines.tolist()):
            m = sel & (eng["engine"] == e)
            order = np.argsort(eng["time_s"][m], kind="stable")
            end = eng["time_s"][m][order] - t0
            start = end - eng["iter_time_s"][m][order]
            t = np.append(start, end[-1])
            y = np.append(eng["batch_size"][m][order], 0).astype(float)
            if t[0] > 0:  # admitted at the step's start, prefilling until the first decode iteration
                t, y = np.append(0.0, t), np.append(y[0], y)
            curves.append((t, y))
            t_end = max(t_end, float(t[-1]))
            if e in shown:
                ax.step(t, y, where="post", lw=0.9, alpha=0.75, color=cmap(j % 20))
        t_end = max(t_end, rollout_s.get(s, 0.0))
        grid, mean = _grid_mean(curves, t_end)
        ax.plot(grid, mean, color="k", lw=1.8, label=f"mean over all {len(engines)} engines")
        if s in rollout_s:
            ax.axvline(rollout_s[s], color="#cc3311", ls="--", lw=1,
                       label=f"rollout ends {rollout_s[s]:.3g} s")
        ax.set_yscale("symlog", linthresh=2, linscale=0.5)
        ax.set_ylim(0, top * 1.15)
        count_ticks(ax, top)
        ax.set_xlim(0, t_end * 1.01 if t_end > 0 else 1)
        ax.set_xlabel("time since the step's rollout phase began (s)")
        ax.set_title(f"step {s}: {len(shown)} of {len(engines)} engines drawn (thin lines)", fontsize=10)
        ax.legend(fontsize=8, loc="best", framealpha=0.85)  # a drain curve leaves different corners free
    axes[0, 0].set_ylabel("active requests per engine (symlog)")
    fig.tight_layout()
    return save(fig, png)


def length_hist(lengths: np.ndarray, png: Path, *, title: str, cap: int | None = None) -> Path:
    """Response-length histogram on log-log axes (log-spaced bins), with p50, p99 and the cap."""
    lengths = np.asarray(lengths, dtype=np.float64)
    lengths = lengths[lengths > 0]
    fig, ax = subplots(figsize=(7.5, 4.0))
    hi = max(float(lengths.max()) if len(lengths) else 1.0, float(cap or 1))
    bins = np.logspace(0, np.log10(hi) + 0.01, 50)
    ax.hist(lengths, bins=bins, color="#4477aa")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.xaxis)
    plain_log_ticks(ax.yaxis)
    if len(lengths):
        for q, style in ((50, "--"), (99, ":")):
            v = np.percentile(lengths, q)
            ax.axvline(v, color="k", ls=style, lw=1, label=f"p{q} = {v:,.0f}")
    if cap:
        ax.axvline(cap, color="#cc3311", lw=1.5, label=f"cap {cap:,}")
    ax.set_xlabel("response length (tokens, log)")
    ax.set_ylabel("rollouts (log)")
    ax.set_title(f"{title}: {len(lengths):,} rollouts", fontsize=11)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return save(fig, png)


def compare_bars(labels: Sequence[str], rollout: Sequence[float], other: Sequence[float],
                 speedup: Sequence[float | None], png: Path, *, baseline: str | None,
                 other_label: str = "train + sync", what: str = "makespan") -> Path:
    """Makespan per run (rollout + the rest, stacked) with the speedup over the baseline run."""
    n = len(labels)
    fig, ax = subplots(figsize=(7.5, 0.9 + 0.42 * n + 0.8))
    y = np.arange(n)[::-1]
    r, o = np.asarray(rollout, float), np.asarray(other, float)
    ax.barh(y, r, 0.65, color=PHASE_COLORS["busy"], label="rollout" if o.any() else None)
    if o.any():
        ax.barh(y, o, 0.65, left=r, color=PHASE_COLORS["train"], label=other_label)
    total = r + o
    for yi, t, sp in zip(y, total, speedup):
        text = f"{t:.3g} s" + (f"  ({sp:.2f}x)" if sp is not None and np.isfinite(sp) else "")
        ax.text(t, yi, " " + text, va="center", fontsize=8.5)
    ax.set_yticks(y, labels, fontsize=8.5)
    ax.set_xlim(0, total.max() * 1.35 if total.max() > 0 else 1)
    ax.set_xlabel(f"{what} (s)")
    vs = f"(speedup over {baseline})" if baseline else "(no 'ar' run to compare against)"
    ax.set_title(f"{what.capitalize()} {vs}", fontsize=10.5)
    if o.any():
        ax.legend(fontsize=8, loc="upper right", frameon=False)  # fastest run on top: its bar is short
    fig.tight_layout()
    return save(fig, png)


def plan_curve(plan: dict[str, Any], png: Path) -> Path:
    """Mean RL step time against engine count for every candidate the planner simulated."""
    fig, ax = subplots(figsize=(7.5, 4.0))
    for row in plan.get("rows", []):
        tried = sorted((int(k), float(v)) for k, v in (row.get("tried") or {}).items())
        if not tried:
            continue
        e, s = zip(*tried)
        pol = row.get("policy") or {}
        label = f"{row.get('label', '?')}: {pol.get('policy', '?')}"
        line, = ax.plot(e, s, marker="o", ms=4, lw=1.2, label=label)
        if row.get("engines") is not None and row.get("step_s") is not None:
            ax.plot([row["engines"]], [row["step_s"]], marker="*", ms=14, color=line.get_color(), mec="k")
    if plan.get("step_time_s") is not None:
        ax.axhline(float(plan["step_time_s"]), color="k", ls="--", lw=1,
                   label=f"target {float(plan['step_time_s']):g} s")
    ax.set_xscale("log", base=2)
    plain_log_ticks(ax.xaxis, base=2)
    ax.set_xlabel(f"engines (x tp{plan.get('tp', 1)} GPUs each, log2)")
    ax.set_ylabel("mean RL step time (s)")
    ax.set_title("Capacity plan: step time vs engines (star = fewest meeting the target)", fontsize=10.5)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return save(fig, png)
