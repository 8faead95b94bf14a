"""The docs' figures: for each, the JSON it is rendered from, the command that writes that JSON, the
docs that show it, and its renderer (JSON -> markdown). benchmarks/reproduce.py runs, renders and
checks them.

A renderer writes the figure and, under it, where it came from (the JSON, the command, the date and
the machine's load), so a reader can always trace a number to its script.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    name: str
    json: str
    command: str
    docs: tuple[str, ...]
    render: Callable[[dict[str, Any]], str]


def source_line(data: dict[str, Any], json_path: str) -> str:
    meta = data.get("meta", {})
    load = meta.get("load_before")
    where = f", load {load[0]:.2f}" if load else ""
    return (f"_From `{json_path}`, written by `{meta.get('command', '?')}` on {meta.get('date', '?')} "
            f"({meta.get('cpu', '?')}, {meta.get('cores', '?')} cores{where})._")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def presets(data: dict[str, Any]) -> str:
    head = ("| preset | cap | p50 | p90 | p99 | p99/p50 | at cap | tokens in longest 5% / 10% | "
            "ICC log len | rank movers/step | rank corr | mean len last/first step |")
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in data["rows"]:
        lines.append(
            f"| {r['preset']} | {r['cap']} | {r['p50']:.0f} | {r['p90']:.0f} | {r['p99']:.0f} | "
            f"{r['p99_over_p50']:.1f} | {_pct(r['clip_ratio'])} | {100 * r['top5_token_share']:.0f}% / "
            f"{100 * r['top10_token_share']:.0f}% | {r['within_group_icc']:.2f} | "
            f"{_pct(r['rank_mover_fraction'])} | {r['rank_corr']:.2f} | "
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

# Docs whose every decimal figure in a table must come from a figure block (grows as docs convert).
CHECKED_DOCS: tuple[str, ...] = ("traces/README.md",)
