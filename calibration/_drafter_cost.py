"""Measure what a model-free drafter (suffix tree, n-gram) costs per engine iteration on the CPU.

In every iteration each active request appends its accepted tokens (``extend``) and asks for a
proposal (``propose``); the cost model charges ``per_request_s * n + per_token_s * draft_tokens``.
The two coefficients come from a least-squares line through (proposal length, seconds) over
many calls on a realistic history: earlier rollouts of the same prompts, which repeat text.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def _synthetic_rollouts(rng: np.random.Generator, n_prompts: int, vocab: int, length: int
                        ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Prompts with responses built from a few shared phrases: text a suffix drafter can match."""
    phrases = [rng.integers(0, vocab, rng.integers(4, 24)) for _ in range(64)]
    out = []
    for _ in range(n_prompts):
        prompt = rng.integers(0, vocab, 32)
        parts, total = [], 0
        while total < length:
            if rng.random() < 0.7:
                ph = phrases[int(rng.integers(len(phrases)))]
            else:
                ph = rng.integers(0, vocab, rng.integers(1, 8))
            parts.append(ph)
            total += len(ph)
        out.append((prompt, np.concatenate(parts)[:length].astype(np.int64)))
    return out


def measure_drafter_cost(drafter: Any, *, n_prompts: int = 16, samples: int = 4, length: int = 256,
                         vocab: int = 32000, seed: int = 0) -> dict[str, Any]:
    """Fit seconds = per_request + per_token * proposal_length over live extend+propose calls."""
    rng = np.random.default_rng(seed)
    history = _synthetic_rollouts(rng, n_prompts, vocab, length)
    drafter.start_step(0)
    for pid, (prompt, resp) in enumerate(history):
        for _ in range(samples):
            drafter.add_rollout(0, pid, prompt, resp)
    drafter.start_step(1)
    lens, secs = [], []
    for pid, (prompt, resp) in enumerate(history):
        rid = pid
        drafter.begin(rid, pid, prompt)
        pos = 0
        while pos < len(resp):
            # Follow the earlier rollout with occasional divergences, so proposals vary in length.
            step = int(rng.integers(1, 4))
            toks = resp[pos:pos + step] if rng.random() < 0.8 else rng.integers(0, vocab, step)
            t0 = time.perf_counter()
            drafter.extend(rid, np.asarray(toks, dtype=np.int64))
            proposal, _ = drafter.propose(rid)
            secs.append(time.perf_counter() - t0)
            lens.append(len(proposal))
            pos += step
        drafter.end(rid)
    plen = np.array(lens, dtype=np.float64)
    t = np.array(secs)
    # Robust to scheduler hiccups: fit through per-length medians, not the raw calls.
    uniq = np.unique(plen)
    med = np.array([np.median(t[plen == u]) for u in uniq])
    if len(uniq) >= 2:
        slope, intercept = np.polyfit(uniq, med, 1, w=np.sqrt([np.sum(plen == u) for u in uniq]))
    else:
        slope, intercept = 0.0, float(med[0])
    return {"kind": getattr(drafter, "name", type(drafter).__name__),
            "per_request_s": float(max(intercept, 0.0)), "per_token_s": float(max(slope, 0.0)),
            "calls": len(t), "mean_proposal": float(plen.mean()), "median_call_s": float(np.median(t)),
            "source": "measured: extend+propose on synthetic repeated-phrase rollouts"}
