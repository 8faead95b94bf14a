"""What a simulation records: per-step figures (the summary's steps) and its tables (requests,
engines, drafter training), built from each step's StepOutcome."""

from __future__ import annotations

from typing import Any

import numpy as np

from specroll.simulator._step import StepOutcome


def step_record(ro, out: StepOutcome, rollout_s: float, train_s: float, sync_s: float, step_s: float,
                 n_engines: int, extra: dict[str, Any]) -> dict[str, Any]:
    busy = float(out.engine_busy_s.sum())
    tokens = extra.pop("step_tokens", int(ro.response_len.sum()))
    rollouts = extra.pop("step_rollouts", ro.n)
    accepted = extra.pop("step_accepted", out.accepted)
    ends = out.end_s[np.isfinite(out.end_s)]
    return {
        "step": ro.step,
        "rollouts": rollouts,
        "rollout_s": rollout_s,
        "train_s": train_s,
        "sync_s": sync_s,
        "step_s": step_s,
        "tokens": tokens,
        "iterations": int(out.engine_iterations.sum()),
        "kernel_iterations": out.kernel_iterations,
        "request_iterations": out.request_iterations,
        "tokens_per_request_iteration": tokens / max(out.request_iterations, 1),
        "drafted_tokens": out.drafted,
        "accepted_tokens": accepted,
        "wasted_draft_tokens": out.drafted - accepted,
        "lossy_tokens": out.lossy,
        "preemptions": int(out.preemptions.sum()),
        "prefill_s": float(out.engine_prefill_s.sum()),
        "engine_busy_s": busy,
        "gpu_busy_fraction": busy / max(rollout_s * n_engines, 1e-300),
        "p50_end_s": float(np.median(ends)) if ends.size else float("nan"),
        **extra,
    }


def partial_stats(ro, out: StepOutcome, gen0: np.ndarray, completed: np.ndarray) -> dict[str, Any]:
    """Token accounting of a partial-rollout step. Tokens generated in the step: a completed
    rollout's length, a stopped one's progress, minus what it had before (``gen0``); fresh starts'
    token 0 comes from their prefill, every request iteration emits accepted + 1, so accepted =
    generated - fresh starts - request iterations (the same identity as a full step)."""
    L = ro.response_len.astype(np.int64)
    final = np.where(completed, L, np.maximum(out.progress, 0))
    started = np.isfinite(out.start_s)
    generated = int(np.where(started, final - gen0, 0).sum())
    fresh = int((started & (gen0 == 0)).sum())
    done_tokens = int(L[completed].sum())
    off = int(gen0[completed].sum())
    return {"step_tokens": generated, "step_rollouts": fresh,
            "step_accepted": generated - fresh - out.request_iterations,
            "completed_rollouts": int(completed.sum()), "completed_tokens": done_tokens,
            "off_policy_tokens": off, "off_policy_fraction": off / max(done_tokens, 1)}


def requests_table(outcomes) -> dict[str, np.ndarray]:
    parts = []
    for step, t0, out, ro, origin, gen0 in outcomes:
        part = {
            "step": np.full(ro.n, step, np.int32), "prompt_id": ro.prompt_id,
            "sample": ro.sample.astype(np.int32),
            "engine": out.engine, "response_len": ro.response_len.astype(np.int32),
            "start_s": t0 + out.start_s, "end_s": t0 + out.end_s, "iterations": out.iterations,
            "preemptions": out.preemptions}
        if origin is not None:  # partial rollouts: a rollout appears in every step it ran in
            done = np.isfinite(out.end_s)
            after = np.where(done, ro.response_len, np.where(out.progress > 0, out.progress, gen0))
            part.update({"origin_step": origin.astype(np.int32), "tokens_before": gen0,
                         "tokens_after": after.astype(np.int64)})
        parts.append(part)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def engines_table(outcomes) -> dict[str, np.ndarray]:
    parts = []
    for step, t0, out, *_ in outcomes:
        tl = out.timeline
        if not tl:
            continue
        parts.append({"step": np.full(tl["engine"].shape[0], step, np.int32), **tl,
                      "time_s": t0 + tl["time_s"]})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def training_table(training: list[tuple[int, int, float, float]], records: list[dict[str, Any]]
                    ) -> dict[str, np.ndarray]:
    """Drafter training on idle engines (TLT): one row per (step, engine) interval, times in the run."""
    if not training:
        return {}
    t0 = np.cumsum([0.0] + [r["step_s"] for r in records])
    idx = np.array([t[0] for t in training], np.int64)
    return {"step": np.array([records[i]["step"] for i in idx], np.int32),
            "engine": np.array([t[1] for t in training], np.int32),
            "start_s": t0[idx] + np.array([t[2] for t in training]),
            "end_s": t0[idx] + np.array([t[3] for t in training])}
