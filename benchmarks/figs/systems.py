"""The systems table (docs/systems.md) and the drafters' measured rates (docs/systems/drafters.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.figures import Figure, source_line

SYSTEMS_JSON = "docs/results/systems_table.json"
RATES_JSON = "docs/results/drafter_rates.json"


def _frac(x: float) -> str:
    if x == 0:
        return "0"
    return "< 0.0005" if x < 0.0005 else f"{x:.3f}"


def _row(r: dict[str, Any]) -> str:
    return (f"| {r['name']} | {r['system']} | {r['makespan_s']:.1f} | {r['rollout_s']:.1f} | "
            f"{r['speedup']:.2f}x | {_frac(r.get('lossy_fraction', 0.0))} | "
            f"{_frac(r.get('off_policy_fraction', 0.0))} |")


_HEAD = ["| name | system | makespan_s | rollout_s | speedup | lossy | off-policy |",
         "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]


def _simulated_on(data: dict[str, Any]) -> str:
    return (f"Simulated on the profile of `{data['config']}` (scale {data['scale']:g}); simulated times "
            "do not depend on the machine's load.")


def systems_table(data: dict[str, Any]) -> str:
    lines = _HEAD + [_row(r) for r in data["rows"]]
    return "\n".join(lines + ["", _simulated_on(data), "", source_line(data, SYSTEMS_JSON)])


def drafter_rows(data: dict[str, Any]) -> str:
    """The rows of the measured drafters (and AR and their same-footing baseline)."""
    keep = [r for r in data["rows"] if r["name"] == "ar" or r["name"].endswith("-smol")
            or r.get("half") == "drafters"]
    lines = _HEAD + [_row(r) for r in keep]
    return "\n".join(lines + ["", _simulated_on(data), "", source_line(data, SYSTEMS_JSON)])


def half_rows(half: str) -> Callable[[dict[str, Any]], str]:
    """AR, the reference and one half's rows of the systems table."""
    def render(data: dict[str, Any]) -> str:
        keep = [r for r in data["rows"] if r["name"] in ("ar", "reference") or r.get("half") == half]
        lines = _HEAD + [_row(r) for r in keep]
        return "\n".join(lines + ["", _simulated_on(data), "", source_line(data, SYSTEMS_JSON)])
    return render


def _ci(e: dict[str, Any], digits: int = 3) -> str:
    lo, hi = e["ci95"]
    return f"{e['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _setup(data: dict[str, Any]) -> str:
    return (f"SmolLM2-135M on the CPU, {data['prompts']} prompts x {data['samples']} samples, T = "
            f"{data['temperature']}, <= {data['max_new_tokens']} new tokens, seed {data['seed']}; "
            f"[95 % bootstrap interval over prompts, {data['bootstrap']} resamples].")


def drafter_match(data: dict[str, Any]) -> str:
    lines = ["| drafter | branches | positions | mean accepted run (kmax 8) | parametric alpha |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, r in data["match"].items():
        lines.append(f"| {name} | {r['tree_width']} | {r['positions']} | {_ci(r['mean_run_k8'])} | "
                     f"{_ci(r['alpha_matched'])} |")
    lines += ["", _setup(data) + f" The last of {data['steps']} AR steps, the earlier ones as history.", "",
              source_line(data, RATES_JSON)]
    return "\n".join(lines)


def drafter_layerskip(data: dict[str, Any]) -> str:
    lines = ["| layers of 30 | alpha (geometric MLE), fixed k = 4 |", "| ---: | ---: |"]
    for layers, r in data["layerskip"].items():
        lines.append(f"| {layers} | {_ci(r['alpha'])} |")
    lines += ["", _setup(data) + " One step.", "", source_line(data, RATES_JSON)]
    return "\n".join(lines)


def drafter_lossy(data: dict[str, Any]) -> str:
    lo = data["lossy"]
    lines = ["| rule | measure | value [95 % CI] |", "| --- | --- | ---: |",
             f"| judge (top_k 4, tau 0.25) on suffix drafts | share of mismatches accepted | "
             f"{_ci(lo['judge']['p_mismatch_accepted'])} |",
             f"| SPEC-RL lenience 2 on the previous rollout | share of mismatches accepted | "
             f"{_ci(lo['lenient2']['p_mismatch_accepted'])} |",
             f"| EAD (1 bit, window 4) on layers 15/30 | share of tokens from the early exit | "
             f"{_ci(lo['ead']['fraction'])} |",
             f"| | mean run of those tokens | {_ci(lo['ead']['run_tokens'], 2)} |",
             f"| | share of those differing from the target's sample | {_ci(lo['ead']['disagree'])} |"]
    lines += ["", _setup(data) + " Two steps.", "", source_line(data, RATES_JSON)]
    return "\n".join(lines)


# The rows each system's section of docs/systems.md quotes (beside the reference and AR).
SECTIONS: dict[str, tuple[str, ...]] = {
    "pearl": ("pearl", "pearl-serial"), "diffuspec": ("diffuspec",),
    "stand": ("stand-tree", "stand-smol", "suffix-smol"), "omnidraft": ("omnidraft", "suffix-smol"),
    "layerskip": ("layerskip", "layerskip-8of30-smol", "layerskip-15of30-smol", "layerskip-22of30-smol"),
    "tlt": ("tlt",), "judge": ("judge", "judge-smol", "suffix-smol"), "ead": ("ead", "ead-smol"),
    "specrl": ("spec-rl", "spec-rl-lossless", "spec-rl-smol", "spec-rl-l2-smol"),
    "histopipe": ("histopipe",), "streamrl": ("streamrl",), "copris": ("copris",),
}


def section(names: tuple[str, ...]) -> Callable[[dict[str, Any]], str]:
    def render(data: dict[str, Any]) -> str:
        by = {r["name"]: r for r in data["rows"]}
        missing = [n for n in names if n not in by]
        if missing:
            raise KeyError(f"{SYSTEMS_JSON} has no rows {missing}")
        parts = []
        for n in ("ar", "reference", *names):
            r = by[n]
            extra = "".join(f", {label} {_frac(r[key])}" for key, label in
                            (("lossy_fraction", "lossy"), ("off_policy_fraction", "off-policy"))
                            if r.get(key))
            parts.append(f"- `{n}`: {r['speedup']:.2f}x over AR on the step ({r['makespan_s']:.1f} s), "
                         f"rollout phase {r['rollout_s']:.1f} s{extra}")
        return "\n".join(parts)
    return render


_RATES_CMD = "python benchmarks/systems/measure_drafters.py --out docs/results/drafter_rates.json"
_SYSTEMS_CMD = "python benchmarks/bench_systems.py --json docs/results/systems_table.json"
# Order matters: benchmarks/reproduce.py runs the commands in this order.
FIGURES: tuple[Figure, ...] = (
    Figure("drafter-match", RATES_JSON, _RATES_CMD, ("docs/systems/drafters.md",), drafter_match),
    Figure("drafter-layerskip", RATES_JSON, _RATES_CMD, ("docs/systems/drafters.md",), drafter_layerskip),
    Figure("drafter-lossy", RATES_JSON, _RATES_CMD, ("docs/systems/drafters.md",), drafter_lossy),
    # after the rates: the systems table's -smol rows read them
    Figure("systems-table", SYSTEMS_JSON, _SYSTEMS_CMD, ("docs/systems.md",), systems_table),
    Figure("drafter-rows", SYSTEMS_JSON, _SYSTEMS_CMD, ("docs/systems/drafters.md",), drafter_rows),
    Figure("engines-rows", SYSTEMS_JSON, _SYSTEMS_CMD, ("docs/systems/engines.md",), half_rows("engines")),
    Figure("scheduling-rows", SYSTEMS_JSON, _SYSTEMS_CMD, ("docs/systems/scheduling.md",),
           half_rows("scheduling")),
    *(Figure(f"sys-{k}", SYSTEMS_JSON, _SYSTEMS_CMD, ("docs/systems.md",), section(v))
      for k, v in SECTIONS.items()),
)
CHECKED_DOCS: tuple[str, ...] = ("docs/systems.md", "docs/systems/drafters.md", "docs/systems/engines.md",
                                 "docs/systems/scheduling.md")
