"""Benchmark scenarios of the engine-side systems (drafters, verification, lossy acceptance) that the
simulator and its cost model express: PEARL, DiffuSpec, LayerSkip-style self-speculation, STAND's
draft trees, TLT's adaptive drafter, Judge decoding, Entropy-Adaptive Decoding and SPEC-RL.

``scenarios(base)`` takes the reference simulate config as a dict (examples/reference.toml parsed)
and returns one entry per system: ``{"name", "system", "config", "lossy", "note"}``, ``config`` a
complete simulate config (``Simulator(SimConfig.from_dict(config)).run()``). The lead's driver runs
them all and prints one table; run this file to print this half alone:

    .venv/bin/python benchmarks/systems/engines.py [--scale 1] [--only pearl,judge]

Every figure an entry assumes (a drafter's acceptance, a judge's rate, a learning curve) is stated in
its ``note`` and in docs/systems/engines.md; none is a measurement unless it says so.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # the benchmarks package; specroll comes from the install

from benchmarks.systems._table import derive  # noqa: E402

# A small draft model for the 7B target (the reference's qwen2.5-7b): the same family's 0.5B shape.
DRAFT = "qwen2.5-0.5b"



def scenarios(base: dict[str, Any]) -> list[dict[str, Any]]:
    """One simulate config per engine-side system, derived from the reference config ``base``."""
    acc = dict(base.get("acceptance", {}))
    kmax = int(acc.get("kmax", 8))
    max_batch = int(base.get("cluster", {}).get("max_batch", 256))
    out = []

    # PEARL and its serial baseline each run under the best of the same candidate policies (PEARL's
    # window, computed from the run's own costs, and every fixed k): the comparison then measures the
    # overlap alone, not a tuned window against an arbitrary k.
    window = {"name": "pearl", "params": {"draft_model": DRAFT, "k_max": kmax, "max_batch": max_batch}}
    candidates = [window] + [{"name": "fixed", "params": {"k": k}} for k in range(1, kmax + 1)]
    out.append({
        "name": "pearl", "system": "PEARL",
        "config": derive(base, drafter={"kind": "model", "model": DRAFT, "overlap": True}, policy=window),
        "best_of": candidates,
        "lossy": False,
        "note": f"a {DRAFT} draft model on its own device, overlapped with verification (iteration = max of "
                "the two); the best of PEARL's window and every fixed k; the reference's parametric "
                "acceptance",
    })
    out.append({
        "name": "pearl-serial", "system": "PEARL (baseline: the same draft model, not overlapped)",
        "config": derive(base, drafter={"kind": "model", "model": DRAFT}, policy=window),
        "best_of": candidates,
        "lossy": False,
        "note": f"ordinary speculative decoding with the {DRAFT} draft model (draft + verify in sequence), "
                "under the best of the same candidate policies as PEARL: what the overlap is measured "
                "against",
    })
    out.append({
        "name": "diffuspec", "system": "DiffuSpec",
        "config": derive(base, drafter={"kind": "parallel", "model": DRAFT},
                          policy={"name": "diffuspec", "params": {"k_max": kmax}}),
        "lossy": False,
        "note": f"a diffusion drafter of {DRAFT}'s shape (assumed; DiffuSpec uses a 7B DLM with a larger "
                "target) filling each draft in one forward, with its KV cache; the ADL controller sets the "
                "length; the reference's parametric acceptance",
    })
    out.append({
        "name": "layerskip", "system": "LayerSkip / Duo-LLM self-speculation",
        "config": derive(base, drafter={"kind": "layers", "layers": 7},
                          policy={"name": "fixed", "params": {"k": 4}}),
        "lossy": False,
        "note": "each draft token is a partial forward of the target's first 7 of 28 layers + LM head; "
                "acceptance: the reference's parametric model (an early exit's real acceptance is lower: see "
                "the SmolLM2 measurements in docs/systems/drafters.md)",
    })
    out.append({
        "name": "stand-tree", "system": "STAND (draft trees, simulated)",
        "config": derive(base, acceptance={**acc, "tree_width": 3},
                          policy={"name": "fixed", "params": {"k": 4}}),
        "lossy": False,
        "note": "a model-free drafter proposing 3 branches of depth k=4: 12 nodes verified per request; "
                "parametric acceptance with 3 independent branches (the reference's per-token rates)",
    })
    tlt_acc = {"source": "adaptive-drafter", "model": acc.get("model", "iid"), "kmax": kmax,
               "alpha0": 0.5, "alpha_max": float(acc.get("alpha", 0.8)), "tokens_scale": 2e8,
               "train_tokens_per_s": 5e4, "drop": 0.3}
    for key in ("alpha_end", "decay_tokens"):
        if key in acc:
            tlt_acc[key] = acc[key]
    out.append({
        "name": "tlt", "system": "TLT (adaptive drafter + adaptive rollout engine)",
        "config": derive(base, acceptance=tlt_acc, drafter={"kind": "layers", "layers": 1},
                          policy={"name": "tlt", "params": {}}),
        "lossy": False,
        "note": "a one-layer drafter (an EAGLE-style head: 1 of the target's layers + LM head) trained "
                "on idle engines; alpha from 0.5 toward the reference's 0.8 over 2e8 trained tokens, 5e4 "
                "tokens per idle engine-second, 30 % lost at each update (assumed); TLT's per-batch bandit "
                "policy",
    })
    out.append({
        "name": "judge", "system": "Judge decoding",
        "config": derive(base, drafter={"kind": "model", "model": DRAFT},
                          lossy={"method": "judge", "p": 0.5},
                          policy={"name": "fixed", "params": {"k": kmax}}),
        "lossy": True,
        "note": f"a {DRAFT} draft model; the judge accepts half the mismatched draft tokens (assumed) and "
                f"drafting continues; k = {kmax}",
    })
    out.append({
        "name": "ead", "system": "Entropy-Adaptive Decoding",
        "config": derive(base, drafter={"kind": "model", "model": DRAFT},
                          lossy={"method": "entropy", "fraction": 0.6, "run_tokens": 16, "disagree": 0.05},
                          policy={"name": "fixed", "params": {"k": kmax}}),
        "lossy": True,
        "note": f"{DRAFT} generates unverified through low-entropy runs covering 60 % of positions (EAD used "
                "the large model for 25-43 % of tokens), mean run 16 tokens, 5 % of its run tokens differ "
                "from the target's (assumed); elsewhere ordinary verification of its drafts",
    })
    out.append({
        "name": "spec-rl", "system": "SPEC-RL",
        "config": derive(base, lossy={"method": "spec-rl", "lenience": math.exp(0.5), "reuse_alpha": 0.995}),
        "lossy": True,
        "note": "the previous step's rollout of each (prompt, sample) verified at admission as one draft "
                "(per-token agreement 0.995 with the updated policy, assumed), lenience e^0.5 (a mismatch "
                "accepted with probability 1 - 1/l = 0.39); the reference's drafter and policy after it",
    })
    out.append({
        "name": "spec-rl-lossless", "system": "SPEC-RL (lenience 1: lossless)",
        "config": derive(base, lossy={"method": "spec-rl", "lenience": 1.0, "reuse_alpha": 0.995}),
        "lossy": False,
        "note": "the same with lenience 1: exact match-length acceptance, no lossy token",
    })
    return out


def main() -> None:
    from benchmarks.systems._table import main_for

    main_for(scenarios, __doc__, str(ROOT / "examples" / "reference.toml"))


if __name__ == "__main__":
    main()
