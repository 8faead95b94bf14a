"""The long tail, visible: active batch size over time per engine, AR vs a speculative policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from specroll.core.plotting import save_png, subplots


def batch_size_over_time(config: Any, policies: list[Any], *, step: int | None = None,
                         engines: int = 8) -> dict[str, dict[str, np.ndarray]]:
    """Per policy name: ``{"engine", "time_s", "batch_size"}`` of the first ``engines`` engines
    during one RL step (the first step by default), relative to the step's start.

    All policies run on one :class:`Simulator` (same trace and acceptance draws).
    """
    from specroll.simulator._simulate import Simulator

    sim = Simulator(config)
    out: dict[str, dict[str, np.ndarray]] = {}
    for policy in policies:
        res = sim.run(policy, show_progress=False)
        tl = res.columns["engines"]
        s = int(tl["step"].min()) if step is None else step
        sel = (tl["step"] == s) & (tl["engine"] < engines)
        t0 = float(tl["time_s"][tl["step"] == s].min())
        label = f"{policy.name} {_short(policy.to_dict()['params'])}".strip()
        out[label] = {"engine": tl["engine"][sel], "time_s": tl["time_s"][sel] - t0,
                      "batch_size": tl["batch_size"][sel], "rollout_s": res.summary["steps"][0]["rollout_s"]}
    return out


def _short(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def plot_batch_size(data: dict[str, dict[str, np.ndarray]], path: str | Path) -> Path:
    """One panel per policy, one step line per engine; the rollout phase's end marked."""

    fig, axes = subplots(len(data), 1, figsize=(9, 2.6 * len(data)), sharex=True, squeeze=False)
    for ax, (label, d) in zip(axes[:, 0], data.items()):
        for e in np.unique(d["engine"]).tolist():
            sel = d["engine"] == e
            ax.step(d["time_s"][sel], d["batch_size"][sel], where="post", lw=0.9, alpha=0.8)
        ax.axvline(float(d["rollout_s"]), color="k", ls="--", lw=0.8)
        ax.set_ylabel("active requests")
        import textwrap

        # A tuned policy's label lists every parameter: wrap it rather than run off the figure.
        title = textwrap.fill(f"{label}: rollout phase {float(d['rollout_s']):.0f} s", width=110)
        ax.set_title(title, fontsize=9 if "\n" in title else 10)
        ax.set_yscale("symlog", linthresh=4)
        ax.set_ylim(bottom=0)
    axes[-1, 0].set_xlabel("time in the RL step (s)")
    fig.tight_layout()
    save_png(fig, path)
    return Path(path)
