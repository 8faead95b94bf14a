"""Workload presets (traces/README.md)."""

from __future__ import annotations

from typing import Any

from benchmarks.figures import Figure, pct, source_line


def presets(data: dict[str, Any]) -> str:
    head = ("| preset | cap | p50 | p90 | p99 | p99/p50 | at cap | tokens in longest 5% / 10% | "
            "ICC log len | rank movers/step | rank corr | mean len last/first step |")
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in data["rows"]:
        lines.append(
            f"| {r['preset']} | {r['cap']} | {r['p50']:.0f} | {r['p90']:.0f} | {r['p99']:.0f} | "
            f"{r['p99_over_p50']:.1f} | {pct(r['clip_ratio'])} | {100 * r['top5_token_share']:.0f}% / "
            f"{100 * r['top10_token_share']:.0f}% | {r['within_group_icc']:.2f} | "
            f"{pct(r['rank_mover_fraction'])} | {r['rank_corr']:.2f} | "
            f"{r['mean_len_last_step'] / r['mean_len_first_step']:.3f} |")
    lines += ["", f"{data['prompts']} prompts x each preset's samples x {data['steps']} steps, seed "
                  f"{data['seed']}."]
    sc = data.get("scale")
    if sc:
        lines += ["", f"Scale: `{sc['command']}` writes {sc['rollouts']:,} rollouts in "
                      f"{sc['wall_s']:.2f} s wall (interpreter start included), "
                      f"{sc['max_rss_mb']:.0f} MB max RSS; it streams one step at a time."]
    lines += ["", source_line(data, "docs/results/presets.json")]
    return "\n".join(lines)


FIGURES: tuple[Figure, ...] = (
    Figure("presets", "docs/results/presets.json",
           "python benchmarks/bench_presets.py --out docs/results/presets.json", ("traces/README.md",),
           presets),
)
CHECKED_DOCS: tuple[str, ...] = ("traces/README.md",)
