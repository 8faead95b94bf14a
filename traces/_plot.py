"""PNG plots of a trace: the length histogram (log axes) and per-prompt lengths across steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from specroll.core.plotting import save_png, subplots
from specroll.traces._trace import Trace


def plot_trace(trace: Trace, out_dir: str | Path, max_prompts: int = 40) -> list[Path]:
    """Write ``lengths_hist.png`` and ``lengths_by_step.png`` into ``out_dir``; return their paths."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rlen = trace.column("response_len").astype(np.float64)
    cap = trace.max_response_len
    written = []

    fig, ax = subplots(figsize=(7, 4.2))
    bins = np.logspace(0, np.log10(cap) + 0.01, 60)
    ax.hist(rlen, bins=bins, color="#4477aa")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for q, style in ((50, "--"), (99, ":")):
        ax.axvline(np.percentile(rlen, q), color="k", ls=style, lw=1, label=f"p{q}")
    ax.axvline(cap, color="#cc3311", lw=1.5, label=f"cap {cap}")
    ax.set_xlabel("response length (tokens)")
    ax.set_ylabel("rollouts")
    ax.set_title(f"{trace.meta.source or 'trace'}: {len(rlen):,} rollouts")
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, out_dir / "lengths_hist.png"))

    # Per-prompt mean length across steps, for the prompts seen in the most steps (ranks, movers, drift).
    step, pid = trace.column("step"), trace.column("prompt_id")
    steps = trace.steps
    uniq, inv = np.unique(pid, return_inverse=True)
    step_idx = np.searchsorted(steps, step)
    sums = np.zeros((len(uniq), len(steps)))
    counts = np.zeros((len(uniq), len(steps)))
    np.add.at(sums, (inv, step_idx), np.log(rlen))  # geometric mean: robust to one runaway
    np.add.at(counts, (inv, step_idx), 1)
    with np.errstate(invalid="ignore"):
        means = np.exp(sums / counts)
    seen = (counts > 0).sum(axis=1)
    # among the prompts seen in the most steps, an evenly spread choice by overall mean length
    full = np.flatnonzero(seen == seen.max())
    full = full[np.argsort(np.nanmean(means[full], axis=1), kind="stable")]
    chosen = full[np.unique(np.linspace(0, len(full) - 1, min(max_prompts, len(full))).round().astype(int))]
    fig, ax = subplots(figsize=(7, 4.2))
    for i in chosen:
        ax.plot(steps, means[i], marker="o", ms=2.5, lw=0.8, alpha=0.7)
    ax.set_yscale("log")
    ax.set_xlabel("RL step")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("geometric mean length of the prompt's group")
    ax.set_title(f"per-prompt lengths across steps ({len(chosen)} of {len(uniq):,} prompts)")
    fig.tight_layout()
    written.append(_save(fig, out_dir / "lengths_by_step.png"))
    return written


def _save(fig, path: Path) -> Path:
    # no timestamps in PNG metadata, so the same trace gives the same bytes
    save_png(fig, path)
    return path
