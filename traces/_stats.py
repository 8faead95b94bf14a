"""Summary statistics of a trace's lengths: the figures papers on RL rollouts report.

All are computed from ``response_len`` (and the group keys) with vectorized numpy, so a
million-rollout trace takes well under a second.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from specroll.traces._trace import Trace

QUANTILES = (50, 75, 90, 99)


def top_share(lengths: np.ndarray, fraction: float) -> float:
    """Share of all tokens held by the longest ``fraction`` of rollouts (at least one rollout)."""
    lengths = np.sort(np.asarray(lengths, dtype=np.float64))[::-1]
    k = max(1, int(np.ceil(fraction * len(lengths))))
    return float(lengths[:k].sum() / lengths.sum())


def _group_index(step: np.ndarray, prompt_id: np.ndarray) -> np.ndarray:
    keys = np.stack([step.astype(np.int64), prompt_id.astype(np.int64)], axis=1)
    return np.unique(keys, axis=0, return_inverse=True)[1].ravel()


def intraclass_correlation(values: np.ndarray, groups: np.ndarray) -> float:
    """One-way ANOVA ICC(1) of ``values`` grouped by the integer labels ``groups``.

    The share of variance explained by the group (the prompt), for unequal group sizes
    (n0 correction). NaN when no group has two members.
    """
    values = np.asarray(values, dtype=np.float64)
    sizes = np.bincount(groups)
    sizes_nz = sizes[sizes > 0]
    k, n = len(sizes_nz), len(values)
    if k < 2 or n - k < 1:
        return float("nan")
    means = np.bincount(groups, weights=values)[sizes > 0] / sizes_nz
    grand = values.mean()
    full_means = np.zeros(len(sizes))
    full_means[sizes > 0] = means
    ss_between = float((sizes_nz * (means - grand) ** 2).sum())
    ss_within = float(((values - full_means[groups]) ** 2).sum())
    ms_between = ss_between / (k - 1)
    ms_within = ss_within / (n - k)
    n0 = (n - (sizes_nz**2).sum() / n) / (k - 1)
    denom = ms_between + (n0 - 1) * ms_within
    return float((ms_between - ms_within) / denom) if denom > 0 else float("nan")


def _percentile_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1] (ties broken by order; 0.5 for a single element)."""
    if len(x) == 1:
        return np.array([0.5])
    r = np.empty(len(x))
    r[np.argsort(x, kind="stable")] = np.arange(len(x))
    return r / (len(x) - 1)


def rank_stability(step: np.ndarray, prompt_id: np.ndarray, lengths: np.ndarray,
                   threshold: float = 0.25) -> dict[str, Any]:
    """How stable per-prompt length ranks are between consecutive steps.

    Each prompt's score in a step is its mean log length; between consecutive steps, over the
    prompts present in both, ``mover_fraction`` is the share whose percentile rank moves by more
    than ``threshold`` (a quartile) and ``rank_corr`` the Spearman correlation of the scores.
    Averaged over step pairs, weighted by the number of shared prompts; NaN with one step.
    """
    logs = np.log(np.asarray(lengths, dtype=np.float64))
    steps = np.unique(step)
    per_step: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for s in steps:
        sel = step == s
        pids, inv = np.unique(prompt_id[sel], return_inverse=True)
        score = np.bincount(inv, weights=logs[sel]) / np.bincount(inv)
        per_step[int(s)] = (pids, score)
    movers = corr = weight = 0.0
    for a, b in zip(steps[:-1], steps[1:]):
        pa_, sa = per_step[int(a)]
        pb_, sb = per_step[int(b)]
        common, ia, ib = np.intersect1d(pa_, pb_, return_indices=True)
        if len(common) < 2:
            continue
        ra, rb = _percentile_ranks(sa[ia]), _percentile_ranks(sb[ib])
        movers += float((np.abs(ra - rb) > threshold).sum())
        corr += float(np.corrcoef(ra, rb)[0, 1]) * len(common)
        weight += len(common)
    if weight == 0:
        return {"mover_fraction": float("nan"), "rank_corr": float("nan")}
    return {"mover_fraction": movers / weight, "rank_corr": corr / weight}


def trace_stats(trace: Trace) -> dict[str, Any]:
    """Length statistics of a trace (a plain JSON-able dict; NaN where undefined)."""
    rlen = trace.column("response_len")
    step, pid = trace.column("step"), trace.column("prompt_id")
    finished = trace.column("finished")
    lengths = rlen.astype(np.float64)
    q = np.percentile(lengths, QUANTILES)
    groups = _group_index(step, pid)
    steps = trace.steps
    step_means = [float(lengths[step == s].mean()) for s in steps]
    ranks = rank_stability(step, pid, lengths)
    return {
        "count": int(len(lengths)),
        "steps": int(len(steps)),
        "prompts": int(len(np.unique(pid))),
        "tokens": int(lengths.sum()),
        "mean": float(lengths.mean()),
        **{f"p{p}": float(v) for p, v in zip(QUANTILES, q)},
        "max": int(rlen.max()),
        "cap": trace.max_response_len,
        "p99_over_p50": float(q[3] / q[0]),
        "clip_ratio": float((~finished).mean()),
        "top5_token_share": top_share(lengths, 0.05),
        "top10_token_share": top_share(lengths, 0.10),
        "within_group_icc": intraclass_correlation(np.log(lengths), groups),
        "rank_mover_fraction": ranks["mover_fraction"],
        "rank_corr": ranks["rank_corr"],
        "mean_len_first_step": step_means[0],
        "mean_len_last_step": step_means[-1],
        "mean_len_by_step": step_means,
    }


def format_stats(stats: dict[str, Any]) -> str:
    """A one-screen text table of :func:`trace_stats` output."""
    rows = [
        ("rollouts", f"{stats['count']:,} ({stats['prompts']:,} prompts x {stats['steps']} steps)"),
        ("tokens", f"{stats['tokens']:,} (mean {stats['mean']:.1f})"),
        ("p50 / p75 / p90 / p99", f"{stats['p50']:.0f} / {stats['p75']:.0f} / {stats['p90']:.0f} / "
                                  f"{stats['p99']:.0f}"),
        ("max / cap", f"{stats['max']} / {stats['cap']}"),
        ("p99 / p50", f"{stats['p99_over_p50']:.1f}"),
        ("clip ratio (hit the cap)", f"{stats['clip_ratio']:.2%}"),
        ("token share, longest 5% / 10%", f"{stats['top5_token_share']:.1%} / "
                                          f"{stats['top10_token_share']:.1%}"),
        ("within-group ICC (log len)", f"{stats['within_group_icc']:.3f}"),
        ("rank movers > quartile / step", f"{stats['rank_mover_fraction']:.1%}"),
        ("rank corr, consecutive steps", f"{stats['rank_corr']:.3f}"),
        ("mean length first -> last step", f"{stats['mean_len_first_step']:.1f} -> "
                                           f"{stats['mean_len_last_step']:.1f}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
