"""Benchmark scenarios of the literature drafters and acceptance rules (the drafter side of the
systems table; docs/systems/drafters.md).

``scenarios(base)`` takes the reference simulate config as a dict (examples/reference.toml parsed)
and returns one entry per system: ``{"name", "system", "config", "lossy", "note"}``, ``config`` a
complete simulate config derived from ``base``. The reference workload is synthetic (lengths, no
tokens), so every drafter's acceptance is the simulator's *parametric* source with an alpha
measured on real SmolLM2-135M text on this CPU by benchmarks/systems/measure_drafters.py (the
constants below, each with the command that produced it). A same-footing baseline row (the suffix
drafter at its own measured alpha) is included: the reference's own alpha (decay 0.8 -> 0.6) is an
assumption about a 7B policy's rollouts, ours are measurements on a 135M model.

Names end in ``-smol`` where benchmarks/systems/engines.py has a row for the same system with an
assumed (not measured) rate. Run this half alone:

    .venv/bin/python benchmarks/systems/drafters.py [--scale 1] [--only omnidraft,judge-smol]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # the benchmarks package; specroll comes from the install

from benchmarks.systems._table import derive  # noqa: E402

# ---- measured on SmolLM2-135M (CPU) by benchmarks/systems/measure_drafters.py ----------------------
# Written to docs/results/drafter_rates.json with 95 % bootstrap intervals over prompts; the scenarios
# use the point estimates and their notes quote the intervals.
RATES_JSON = ROOT / "docs" / "results" / "drafter_rates.json"


def _rates() -> dict[str, Any]:
    if not RATES_JSON.is_file():
        raise SystemExit(f"{RATES_JSON.relative_to(ROOT)} missing: run "
                         "python benchmarks/systems/measure_drafters.py")
    return json.loads(RATES_JSON.read_text())


RATES = _rates()
ALPHA_MATCHED = {k: v["alpha_matched"]["value"] for k, v in RATES["match"].items()}
ALPHA_LAYERSKIP = {int(k): v["alpha"]["value"] for k, v in RATES["layerskip"].items()}
SMOL_LAYERS = 30
JUDGE_P = RATES["lossy"]["judge"]["p_mismatch_accepted"]["value"]
EAD = {k: RATES["lossy"]["ead"][k]["value"] for k in ("fraction", "run_tokens", "disagree")}


def _ci(e: dict[str, Any], pct: bool = False) -> str:
    """A measured rate with its interval, as the notes quote it."""
    f = (lambda x: f"{100 * x:.1f} %") if pct else (lambda x: f"{x:.3f}")
    return f"{f(e['value'])} (95 % CI {f(e['ci95'][0])}-{f(e['ci95'][1])})"


SPECRL_LENIENCE = 2.0


def _parametric(alpha: float, kmax: int, tree_width: int = 1) -> dict[str, Any]:
    acc = {"source": "parametric", "model": "iid", "alpha": float(alpha), "kmax": int(kmax)}
    if tree_width > 1:
        acc["tree_width"] = int(tree_width)
    return acc


def _target_layers(base: dict[str, Any]) -> int:
    from specroll.calibration import MODEL_SHAPES

    return int(MODEL_SHAPES.get(base.get("model", {}).get("name", "qwen2.5-7b")).n_layers)


def scenarios(base: dict[str, Any]) -> list[dict[str, Any]]:
    """One complete simulate config per drafter-side system, derived from the reference ``base``."""
    target_layers = _target_layers(base)
    out = [
        {"name": "suffix-smol", "system": "SuffixDecoding / DAS (same-footing baseline)",
         "config": derive(base, acceptance=_parametric(ALPHA_MATCHED["suffix"], 8)),
         "lossy": False,
         "note": "the reference's policy with the suffix drafter's alpha measured on SmolLM2 "
                 f"({_ci(RATES['match']['suffix']['alpha_matched'])}), "
                 "the baseline the measured rows below compare with"},
        {"name": "omnidraft", "system": "OmniDraft",
         "config": derive(base, acceptance=_parametric(ALPHA_MATCHED["omni"], 8),
                           policy={"name": "adaptive", "params": {"mode": "aimd", "k_init": 4, "k_max": 8}}),
         "lossy": False,
         "note": "drafter omni (n-gram cache over every prompt's rollouts), alpha "
                 f"{_ci(RATES['match']['omni']['alpha_matched'])} measured on SmolLM2; "
                 "OmniDraft's adaptive drafting = the adaptive (AIMD) policy; model-free drafter cost"},
        {"name": "stand-smol", "system": "STAND",
         "config": derive(base, acceptance=_parametric(ALPHA_MATCHED["stand"], 8, tree_width=3)),
         "lossy": False,
         "note": "drafter stand, trees of 3 branches (depth k verifies 3k nodes); per-branch alpha "
                 f"{_ci(RATES['match']['stand']['alpha_matched'])} "
                 "matches the measured mean accepted run of the tree on SmolLM2"},
        {"name": "spec-rl-smol", "system": "SPEC-RL",
         "config": derive(base, acceptance=_parametric(ALPHA_MATCHED["prevrollout"], 32),
                           policy={"name": "ar", "params": {}},
                           lossy={"method": "spec-rl", "lenience": 1.0}),
         "lossy": False,
         "note": "drafter prevrollout: the cached rollout verified at admission, then plain decoding; "
                 f"alpha {_ci(RATES['match']['prevrollout']['alpha_matched'])} measured on SmolLM2 at "
                 "T = 0.7 "
                 "(independent samples of an unchanged model "
                 "diverge early); lenience 1 = lossless"},
        {"name": "spec-rl-l2-smol", "system": "SPEC-RL (lenience 2)",
         "config": derive(base, acceptance=_parametric(ALPHA_MATCHED["prevrollout"], 32),
                           policy={"name": "ar", "params": {}},
                           lossy={"method": "spec-rl", "lenience": SPECRL_LENIENCE}),
         "lossy": True,
         "note": "as spec-rl with lenience 2 (the simulator's mismatch acceptance 1 - 1/l; the real "
                 "backend's keyed rule accepted "
                 f"{_ci(RATES['lossy']['lenient2']['p_mismatch_accepted'], True)} "
                 "of mismatches on SmolLM2)"},
        {"name": "judge-smol", "system": "Judge Decoding",
         "config": derive(base, acceptance=_parametric(ALPHA_MATCHED["suffix"], 8),
                          lossy={"method": "judge", "p": JUDGE_P}),
         "lossy": True,
         "note": "on the same footing as suffix-smol (the suffix drafter's acceptance measured on SmolLM2, "
                 "the reference policy), a judge accepting "
                 f"{_ci(RATES['lossy']['judge']['p_mismatch_accepted'], True)} "
                 "of mismatches (measured: logit judge "
                 "top_k 4, tau 0.25, on the suffix drafter's drafts on SmolLM2): its gain over suffix-smol "
                 "is what the lossy rule adds"},
    ]
    for n, alpha in sorted(ALPHA_LAYERSKIP.items()):
        layers = max(1, round(target_layers * n / SMOL_LAYERS))
        out.append({
            "name": f"layerskip-{n}of{SMOL_LAYERS}-smol",
            "system": f"Duo-LLM / LayerSkip ({n}/{SMOL_LAYERS} layers)",
            "config": derive(base, acceptance=_parametric(alpha, 4),
                              policy={"name": "fixed", "params": {"k": 4}},
                              drafter={"kind": "layers", "layers": layers}),
            "lossy": False,
            "note": f"self-speculation from the first {layers}/{target_layers} layers (drafter kind "
                    f"'layers'); parametric alpha {_ci(RATES['layerskip'][str(n)]['alpha'])} measured with "
                    f"SmolLM2's first {n}/{SMOL_LAYERS} "
                    "layers (not trained for early exit), fixed k = 4 as measured"})
    n = 15
    layers = max(1, round(target_layers * n / SMOL_LAYERS))
    out.append({
        "name": "ead-smol", "system": "Entropy-Adaptive Decoding",
        "config": derive(base, acceptance=_parametric(ALPHA_LAYERSKIP[n], 8),
                         policy={"name": "fixed", "params": {"k": 1}},
                         drafter={"kind": "layers", "layers": layers},
                         lossy={"method": "entropy", **EAD}),
        "lossy": True,
        "note": f"small model = the first {layers}/{target_layers} layers; low-entropy runs measured on "
                f"SmolLM2 (threshold 1 bit, window 4): {_ci(RATES['lossy']['ead']['fraction'], True)} of "
                f"tokens, runs of {_ci(RATES['lossy']['ead']['run_tokens'])}, "
                f"{_ci(RATES['lossy']['ead']['disagree'], True)} of them differ; k = 1 (a half-depth "
                "drafter costs half a forward per token)"})
    return out


def main() -> None:
    from benchmarks.systems._table import main_for

    main_for(scenarios, __doc__, str(ROOT / "examples" / "reference.toml"))


if __name__ == "__main__":
    main()
