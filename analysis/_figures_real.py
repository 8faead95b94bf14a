"""Report figures for real-backend rollouts, sim-vs-real validation and tuning studies."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from specroll.analysis._figures import plain_log_ticks, save
from specroll.core.plotting import colormap, subplots


def _step_colors(steps: Sequence[int]) -> dict[int, Any]:
    cmap = colormap("viridis")
    n = max(len(steps) - 1, 1)
    return {s: cmap(0.85 * i / n) for i, s in enumerate(steps)}


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < window:
        return y
    kernel = np.ones(window) / window
    # 'valid' part of the moving average, padded with the raw ends so x stays aligned
    core = np.convolve(y, kernel, mode="valid")
    pad = window // 2
    return np.concatenate([y[:pad], core, y[len(core) + pad:]])


def rollout_batch(it: dict[str, np.ndarray], png: Path) -> Path:
    """Decode batch size over wall time, one line per RL step (time = sum of the step's iteration
    wall times, prefills included, so the x axis ends at the step's makespan)."""
    steps = np.unique(it["step"]).tolist()
    colors = _step_colors(steps)
    fig, ax = subplots(figsize=(7.5, 4.0))
    for s in steps:
        sel = it["step"] == s
        wall = it["wall_s"][sel]
        start = np.concatenate([[0.0], np.cumsum(wall)[:-1]])
        dec = it["phase"][sel] == "decode"
        if not dec.any():
            continue
        t = np.append(start[dec], start[dec][-1] + wall[dec][-1])
        y = np.append(it["batch_size"][sel][dec], 0)
        ax.step(t, y, where="post", lw=1.1, color=colors[s], label=f"step {s}")
    ax.set_xlabel("wall time since the step began (s)")
    ax.set_ylabel("requests in the decode batch")
    ax.set_ylim(bottom=0)
    ax.set_title("Batch size over time (real backend)", fontsize=11)
    ax.legend(fontsize=8, frameon=False, ncols=2 if len(steps) > 6 else 1)
    fig.tight_layout()
    return save(fig, png)


def rollout_accepted(it: dict[str, np.ndarray], png: Path) -> Path:
    """Accepted draft tokens per decode iteration (whole batch, and per request in the batch)."""
    steps = np.unique(it["step"]).tolist()
    colors = _step_colors(steps)
    fig, axes = subplots(2, 1, figsize=(7.5, 5.4), sharex=True)
    for s in steps:
        sel = (it["step"] == s) & (it["phase"] == "decode")
        if not sel.any():
            continue
        x = np.arange(int(sel.sum()))
        acc = it["accepted"][sel].astype(float)
        per_req = acc / np.maximum(it["batch_size"][sel], 1)
        w = max(1, len(x) // 40)
        axes[0].plot(x, acc, lw=0.5, alpha=0.3, color=colors[s])
        axes[0].plot(x, _smooth(acc, w), lw=1.3, color=colors[s], label=f"step {s}")
        axes[1].plot(x, _smooth(per_req, w), lw=1.3, color=colors[s])
    axes[0].set_ylabel("accepted tokens\n(whole batch)")
    axes[1].set_ylabel("accepted tokens\nper request")
    axes[1].set_xlabel("decode iteration within the step")
    axes[0].set_title("Accepted draft tokens per iteration (thick: moving average)", fontsize=11)
    axes[0].legend(fontsize=8, frameon=False, ncols=2 if len(steps) > 6 else 1)
    for ax in axes:
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    return save(fig, png)


def rollout_iter_time(it: dict[str, np.ndarray], png: Path) -> Path:
    """Iteration wall time against batch size; colour = query tokens per request (1 = plain
    decode, more = verifying drafts); prefills in grey."""
    fig, ax = subplots(figsize=(7.5, 4.0))
    dec = it["phase"] == "decode"
    q_per = it["q_sum"][dec] / np.maximum(it["batch_size"][dec], 1)
    sc = ax.scatter(it["batch_size"][dec], 1e3 * it["wall_s"][dec], c=q_per, s=9, cmap="plasma",
                    alpha=0.75, vmin=1, vmax=max(2.0, float(q_per.max()) if len(q_per) else 2.0))
    fig.colorbar(sc, ax=ax, label="query tokens per request")
    pre = it["phase"] == "prefill"
    if pre.any():
        ax.scatter(it["batch_size"][pre], 1e3 * it["wall_s"][pre], s=16, marker="s", color="#999999",
                   label="prefill")
        ax.legend(fontsize=8, frameon=False, loc="upper left")
    if len(it["batch_size"]) and it["batch_size"].max() >= 8 * max(it["batch_size"].min(), 1):
        ax.set_xscale("log", base=2)
        plain_log_ticks(ax.xaxis, base=2)
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set_xlabel("batch size (requests)")
    ax.set_ylabel("iteration wall time (ms, log)")
    ax.set_title("Iteration time vs batch size (includes drafting and sampling)", fontsize=11)
    fig.tight_layout()
    return save(fig, png)


def validate_parity(cmp: dict[str, np.ndarray], png: Path, *, band: float = 0.10) -> Path:
    """Simulated against measured makespan, one point per (policy, repeat, step); y = x and a
    +-``band`` relative band."""
    fig, ax = subplots(figsize=(6.2, 5.6))
    real, sim = cmp["real_makespan_s"].astype(float), cmp["sim_makespan_s"].astype(float)
    ok = np.isfinite(real) & np.isfinite(sim) & (real > 0) & (sim > 0)
    lo = float(min(real[ok].min(), sim[ok].min())) * 0.8 if ok.any() else 0.1
    hi = float(max(real[ok].max(), sim[ok].max())) * 1.25 if ok.any() else 1.0
    xs = np.geomspace(lo, hi, 50)
    ax.fill_between(xs, xs * (1 - band), xs * (1 + band), color="#dddddd", label=f"±{100 * band:.0f} %")
    ax.plot(xs, xs, color="k", lw=1, label="y = x")
    policies = list(dict.fromkeys(cmp["policy"].tolist()))
    markers = "osD^vP*X"
    for i, p in enumerate(policies):
        m = ok & (cmp["policy"] == p)
        err = np.median(sim[m] / real[m] - 1) if m.any() else np.nan
        ax.scatter(real[m], sim[m], s=28, marker=markers[i % len(markers)], alpha=0.8,
                   label=f"{p} (median {100 * err:+.1f} %)")
    if hi / lo > 20:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("measured step makespan (s)")
    ax.set_ylabel("simulated step makespan (s)")
    ax.set_title("Simulator vs real backend, per step", fontsize=11)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    fig.tight_layout()
    return save(fig, png)


def validate_speedup(names: Sequence[str], measured: Sequence[float | None],
                     predicted: Sequence[float | None], png: Path) -> Path:
    """Measured and predicted speedup over autoregressive decoding, per policy."""
    fig, ax = subplots(figsize=(7.5, 4.0))
    x = np.arange(len(names))
    m = np.array([np.nan if v is None else float(v) for v in measured])
    p = np.array([np.nan if v is None else float(v) for v in predicted])
    ax.bar(x - 0.2, m, 0.38, color="#4477aa", label="measured (real backend)")
    ax.bar(x + 0.2, p, 0.38, color="#ee7733", label="predicted (simulator)")
    for xi, a, b in zip(x, m, p):
        for dx, v in ((-0.2, a), (0.2, b)):
            if np.isfinite(v):
                ax.text(xi + dx, v, f"{v:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(x, names, fontsize=9)
    ax.set_ylabel("speedup over autoregressive (x)")
    top = np.nanmax(np.concatenate([m, p, [1.0]]))
    ax.set_ylim(0, top * 1.2)
    ax.set_title("Speedup: measured vs predicted", fontsize=11)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    fig.tight_layout()
    return save(fig, png)


def tune_history(number: np.ndarray, value: np.ndarray, png: Path, *, label: str = "objective",
                 refs: dict[str, float] | None = None) -> Path:
    """Objective of every completed trial and the running best (the Optuna history plot), with
    reference values (the family's defaults, no speculation) as horizontal lines."""
    fig, ax = subplots(figsize=(7.5, 4.0))
    order = np.argsort(number, kind="stable")
    n, v = number[order], value[order]
    ax.scatter(n, v, s=16, color="#4477aa", alpha=0.8, label="trial")
    best = np.minimum.accumulate(v)
    ax.step(n, best, where="post", color="#cc3311", lw=1.6, label="best so far")
    for (name, ref), style in zip((refs or {}).items(), ("--", ":", "-.")):
        ax.axhline(ref, color="#555555", ls=style, lw=1, label=f"{name}: {ref:.4g}")
    ax.set_xlabel("trial number")
    ax.set_ylabel(label)
    ax.set_title(f"Optimization history: {len(v)} completed trials, best {best[-1]:.4g}", fontsize=11)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return save(fig, png)


def tune_importance(importances: dict[str, float], png: Path, *, method: str) -> Path:
    """Parameter importances as horizontal bars (largest on top)."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = subplots(figsize=(7.5, 1.2 + 0.38 * len(items)))
    names = [k for k, _ in items]
    vals = [v for _, v in items]
    ax.barh(names, vals, color="#228833")
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8.5)
    ax.set_xlim(0, max(vals + [1e-9]) * 1.2)
    ax.set_xlabel("importance")
    ax.set_title(f"Parameter importance ({method})", fontsize=10.5)
    fig.tight_layout()
    return save(fig, png)


def tune_slices(params: dict[str, np.ndarray], value: np.ndarray, png: Path, *,
                label: str = "objective") -> Path:
    """Objective against each searched parameter (one small panel each; categories spread on x)."""
    names = list(params)
    ncols = min(4, len(names))
    nrows = -(-len(names) // ncols)
    # three or more panels: 15 in wide, meant to span the page (see sim_batch); else half width
    fig, axes = subplots(nrows, ncols, figsize=(15 if ncols >= 3 else 7.5, 3.3 * nrows + 0.6),
                             squeeze=False, sharey=True)
    n = len(value)
    order = np.arange(n)  # trial order: later trials darker (the lightest stay visible: vmin < 0)
    for ax, name in zip(axes.ravel(), names):
        col = params[name]
        numeric = col.dtype.kind in "biuf"
        if numeric:
            ax.scatter(col.astype(float), value, s=14, alpha=0.8, c=order, cmap="Blues", vmin=-0.4 * n)
        else:
            cats = sorted({str(c) for c in col})
            pos = np.array([cats.index(str(c)) for c in col], dtype=float)
            ax.scatter(pos, value, s=14, alpha=0.8, c=order, cmap="Blues", vmin=-0.4 * n)
            ax.set_xticks(range(len(cats)), cats, fontsize=8)
        ax.set_xlabel(name, fontsize=9)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(label)
    fig.suptitle("Objective vs each parameter (darker = later trial)", fontsize=11)
    fig.tight_layout()
    return save(fig, png)
