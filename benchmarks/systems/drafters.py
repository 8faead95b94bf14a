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

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # the benchmarks package; specroll comes from the install

from benchmarks.systems._table import derive  # noqa: E402

# ---- measured on SmolLM2-135M (CPU), 2026-11-24 ------------------------------------------------------
# `.venv/bin/python benchmarks/systems/measure_drafters.py --part match` (load average 1.57): match
# lengths on examples/data/cpu-smollm2-train.parquet, last step (2 steps of history); the parametric
# alpha whose mean accepted run at kmax 8 equals the measured one (for stand: of 3 independent branches).
ALPHA_MATCHED = {"suffix": 0.414, "omni": 0.473, "stand": 0.300, "prevrollout": 0.053}
# `... --part layerskip` (load average 0.47 -> 2.11; 4 prompts x 2 samples, <= 96 tokens, fixed k = 4,
# T = 0.7): per-token acceptance (geometric MLE) of the target's first n of 30 layers as drafter.
ALPHA_LAYERSKIP = {8: 0.060, 15: 0.113, 22: 0.319}
SMOL_LAYERS = 30
# `... --part lossy` (load average 0.75 -> 2.19; 2 steps, T = 0.7): the judge (top_k 4, tau 0.25) on
# the suffix drafter's drafts accepted 19.9 % of the mismatches it met; SPEC-RL lenience 2 on the
# previous rollout accepted 1.2 %; entropy-adaptive decoding on layers 15/30 (threshold 1 bit,
# window 4, k 8): 15.8 % of tokens from the small model in runs of 2.82, 79 % of them differing from
# the target's own sample (lossy fraction 12.5 %).
JUDGE_P = 0.199
EAD = {"fraction": 0.158, "run_tokens": 2.82, "disagree": 0.79}
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
         "note": "the reference's policy with the suffix drafter's alpha measured on SmolLM2 (0.414), "
                 "the baseline the measured rows below compare with"},
        {"name": "omnidraft", "system": "OmniDraft",
         "config": derive(base, acceptance=_parametric(ALPHA_MATCHED["omni"], 8),
                           policy={"name": "adaptive", "params": {"mode": "aimd", "k_init": 4, "k_max": 8}}),
         "lossy": False,
         "note": "drafter omni (n-gram cache over every prompt's rollouts), alpha 0.473 measured on SmolLM2; "
                 "OmniDraft's adaptive drafting = the adaptive (AIMD) policy; model-free drafter cost"},
        {"name": "stand-smol", "system": "STAND",
         "config": derive(base, acceptance=_parametric(ALPHA_MATCHED["stand"], 8, tree_width=3)),
         "lossy": False,
         "note": "drafter stand, trees of 3 branches (depth k verifies 3k nodes); per-branch alpha 0.300 "
                 "matches the measured mean accepted run of the tree on SmolLM2"},
        {"name": "spec-rl-smol", "system": "SPEC-RL",
         "config": derive(base, acceptance=_parametric(ALPHA_MATCHED["prevrollout"], 32),
                           policy={"name": "ar", "params": {}},
                           lossy={"method": "spec-rl", "lenience": 1.0}),
         "lossy": False,
         "note": "drafter prevrollout: the cached rollout verified at admission, then plain decoding; "
                 "alpha 0.053 measured on SmolLM2 at T = 0.7 (independent samples of an unchanged model "
                 "diverge early); lenience 1 = lossless"},
        {"name": "spec-rl-l2-smol", "system": "SPEC-RL (lenience 2)",
         "config": derive(base, acceptance=_parametric(ALPHA_MATCHED["prevrollout"], 32),
                           policy={"name": "ar", "params": {}},
                           lossy={"method": "spec-rl", "lenience": SPECRL_LENIENCE}),
         "lossy": True,
         "note": "as spec-rl with lenience 2 (the simulator's mismatch acceptance 1 - 1/l; the real "
                 "backend's keyed rule accepted 1.2 % of mismatches on SmolLM2)"},
        {"name": "judge-smol", "system": "Judge Decoding",
         "config": derive(base, acceptance=_parametric(ALPHA_MATCHED["suffix"], 8),
                          lossy={"method": "judge", "p": JUDGE_P}),
         "lossy": True,
         "note": "on the same footing as suffix-smol (the suffix drafter's acceptance measured on SmolLM2, "
                 "the reference policy), a judge accepting 19.9 % of mismatches (measured: logit judge "
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
                    f"'layers'); parametric alpha {alpha} measured with SmolLM2's first {n}/{SMOL_LAYERS} "
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
                "SmolLM2 (threshold 1 bit, window 4): 15.8 % of tokens, runs of 2.82, 79 % differ; k = 1, "
                "the best of k = 1/2/3/4/8 and das on this config (makespan 436 to 1174 s, all slower "
                "than AR: a half-depth drafter costs half a forward per token at alpha 0.113)"})
    return out


def main() -> None:
    from benchmarks.systems._table import main_for

    main_for(scenarios, __doc__, str(ROOT / "examples" / "reference.toml"))


if __name__ == "__main__":
    main()
