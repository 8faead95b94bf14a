"""The simulator's speed (docs/simulator.md)."""

from __future__ import annotations

from typing import Any

from benchmarks.figures import Figure, source_line

JSON = "docs/results/simulator_speed.json"


def speed(data: dict[str, Any]) -> str:
    lines = ["| scale | rollouts | tokens | kernel iterations | acceptance s | kernel s | wall s | CPU s | "
             "M tokens / wall s | M tokens / CPU s | wall x per 4x rollouts |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in data["rows"]:
        ratio = f"{r['wall_ratio_prev']:.2f}" if r.get("wall_ratio_prev") else ""
        lines.append(f"| {r['scale']:g} | {r['rollouts']:,} | {r['tokens'] / 1e6:.1f} M | "
                     f"{r['kernel_iterations']:,} | {r['acceptance_wall_s']:.3f} | "
                     f"{r['kernel_wall_s']:.3f} | "
                     f"{r['wall_s']:.3f} | {r['cpu_s']:.3f} | {r['tokens_per_wall_s'] / 1e6:.1f} | "
                     f"{r['tokens'] / r['cpu_s'] / 1e6:.1f} | {ratio} |")
    load = data["meta"].get("load_before", [0])[0]
    lines += ["", f"`{data['policy']}` on `{data['config']}`, {data['steps']} step(s), "
                  f"kernel {data['kernel']}, "
                  f"best of {data['repeat']} fresh runs per scale. Wall times depend on the machine's load "
                  f"({load:.2f} before this run); CPU seconds less so.", "", source_line(data, JSON)]
    return "\n".join(lines)


FIGURES: tuple[Figure, ...] = (
    Figure("simulator-speed", JSON, "python benchmarks/bench_simulator.py --repeat 3 --json " + JSON,
           ("docs/simulator.md",), speed),
)
# Not a checked doc: its config tables hold default values (decimals that are not figures).
CHECKED_DOCS: tuple[str, ...] = ()
