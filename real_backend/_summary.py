"""The summaries of a rollout run: per RL step and overall (summary.json's content)."""

from __future__ import annotations

from typing import Any

import numpy as np

from specroll.real_backend._lossy import make_accept_rule
from specroll.real_backend._results import RolloutSummary


def step_summary(step: int, out: Any, correct: list[bool | None]) -> dict[str, Any]:
    decode = [r for r in out.iterations if r["phase"] == "decode"]
    tokens = sum(len(r.tokens) for r in out.rollouts)
    lens = np.array([len(r.tokens) for r in out.rollouts])
    accepted = sum(r["accepted"] for r in decode)
    drafted = sum(r["drafted"] for r in decode)
    lossy = sum(r.get("lossy_tokens", 0) for r in decode)
    known = [c for c in correct if c is not None]
    return {
        "step": step,
        "makespan_s": out.wall_s,
        "tokens": tokens,
        "rollouts": len(out.rollouts),
        "iterations": len(decode),
        "prefills": len(out.iterations) - len(decode),
        "drafted": drafted,
        "accepted": accepted,
        "accepted_per_iteration": accepted / max(1, len(decode)),
        "tokens_per_iteration": sum(r["new_tokens"] for r in decode) / max(1, len(decode)),
        "acceptance_rate": accepted / drafted if drafted else None,
        "lossy_tokens": lossy,
        "lossy_fraction": lossy / tokens if tokens else 0.0,
        "draft_nodes": sum(r["q_sum"] - r["batch_size"] for r in decode),
        "draft_wall_s": sum(r.get("draft_wall_s", 0.0) for r in decode),
        "tokens_per_s": tokens / out.wall_s if out.wall_s > 0 else None,
        "mean_response_len": float(lens.mean()),
        "max_response_len": int(lens.max()),
        "finished_fraction": float(np.mean([r.finished for r in out.rollouts])),
        "accuracy": float(np.mean(known)) if known else None,
    }


def run_summary(cfg: Any, policy: Any, steps: list[dict[str, Any]], dtype: str,
                kmax: int) -> RolloutSummary:
    tokens = sum(s["tokens"] for s in steps)
    wall = sum(s["makespan_s"] for s in steps)
    iters = sum(s["iterations"] for s in steps)
    accepted = sum(s["accepted"] for s in steps)
    config = cfg.model_dump()
    config.update(dtype=dtype, kmax=kmax, policy_spec=policy.to_dict())
    return RolloutSummary(**{
        "config": config,
        "steps": steps,
        "makespan_s": [s["makespan_s"] for s in steps],
        "total_wall_s": wall,
        "tokens": tokens,
        "iterations": iters,
        "accepted": accepted,
        "accepted_per_iteration": accepted / max(1, iters),
        "tokens_per_s": tokens / wall if wall > 0 else None,
        "drafted": sum(s["drafted"] for s in steps),
        "lossy": make_accept_rule(cfg.accept, **cfg.accept_params).is_lossy,
        "lossy_tokens": sum(s["lossy_tokens"] for s in steps),
        "lossy_fraction": sum(s["lossy_tokens"] for s in steps) / tokens if tokens else 0.0,
    })
