"""Length history: a prompt's past response lengths predict the length of its next rollout.

RL re-samples the same prompts every step, and a prompt's response length is strongly
correlated across steps (DAS §3; docs/design.md "Why the problem exists"), so the mean of its recent
rollouts is a good predictor of which requests will form the long tail. The simulator and the
real backend record every completed rollout once its step ends and fill
``PolicyState.predicted_len`` from :meth:`LengthHistory.predict` at admission.

Also the length-class helper (Long / Medium / Short) that DAS and other families reuse.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from specroll.core.errors import SpecrollError

SHORT, MEDIUM, LONG = 0, 1, 2
"""Length-class codes returned by :func:`length_class` (ordered: a longer class is larger)."""

_STATS = ("mean", "max", "median")


class LengthHistory:
    """Past response lengths per (step, prompt_id); predicts from the ``window`` steps before.

    ``record`` accepts scalars (the real backend, one rollout at a time) or equal-length arrays
    (the simulator, a whole step at once). Rollouts that hit the cap (``finished=False``) are
    kept with their capped length: a new rollout of that prompt is likely to hit it again.
    ``stat`` is how a prompt's past lengths combine: ``mean`` (default), ``max`` or ``median``.
    """

    def __init__(self, window: int = 4, stat: str = "mean") -> None:
        if int(window) < 1:
            raise SpecrollError(f"window must be >= 1, got {window}", field="window")
        if stat not in _STATS:
            raise SpecrollError(f"unknown stat '{stat}'", field="stat", fix=f"use one of {', '.join(_STATS)}")
        self.window = int(window)
        self.stat = stat
        self._raw: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        # Per step: (sorted unique prompt ids, per-id lengths grouped in id order, group starts).
        self._agg: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._newest = -1

    def __len__(self) -> int:
        return sum(len(p) for parts in self._raw.values() for p, _ in parts)

    def record(self, step: Any, prompt_id: Any, response_len: Any, finished: Any = True) -> None:
        """Add completed rollouts (``finished`` is accepted for the contract; capped ones count too)."""
        steps = np.atleast_1d(np.asarray(step, dtype=np.int64))
        pids = np.atleast_1d(np.asarray(prompt_id, dtype=np.int64))
        lens = np.atleast_1d(np.asarray(response_len, dtype=np.float64))
        steps = np.broadcast_to(steps, pids.shape) if steps.size == 1 else steps
        if not (steps.shape == pids.shape == lens.shape):
            raise SpecrollError("step, prompt_id and response_len must have the same length",
                                field="response_len")
        if lens.size and (np.any(lens < 0) or np.any(~np.isfinite(lens))):
            raise SpecrollError("response lengths must be finite and >= 0", field="response_len")
        for s in np.unique(steps):
            sel = steps == s
            self._raw.setdefault(int(s), []).append((pids[sel].copy(), lens[sel].copy()))
            self._agg.pop(int(s), None)
        if steps.size:
            self._newest = max(self._newest, int(steps.max()))
            # Steps no prediction for the newest step or the next can use (predict(step) reads
            # step-window .. step-1): memory stays bounded over a long run.
            for s in [s for s in self._raw if s < self._newest - self.window]:
                del self._raw[s]
                self._agg.pop(s, None)

    def _aggregate(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if step not in self._agg:
            pids = np.concatenate([p for p, _ in self._raw[step]])
            lens = np.concatenate([v for _, v in self._raw[step]])
            order = np.lexsort((lens, pids))  # by id, then length (median/max need sorted groups)
            pids, lens = pids[order], lens[order]
            ids, starts = np.unique(pids, return_index=True)
            self._agg[step] = (ids, lens, starts)
        return self._agg[step]

    def predict(self, prompt_ids: Any, step: int) -> np.ndarray:
        """float (n,): predicted total response length per prompt from steps [step-window, step).

        NaN for a prompt with no rollout in the window.
        """
        q = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        used = [s for s in sorted(self._raw) if step - self.window <= s < step]
        if not used or q.size == 0:
            return np.full(q.size, np.nan)
        # Gather every past length of each queried prompt: one (query, length) pair per match.
        qi_parts, len_parts = [], []
        for s in used:
            ids, lens, starts = self._aggregate(s)
            pos = np.searchsorted(ids, q)
            pos_c = np.minimum(pos, ids.size - 1)
            hit = ids[pos_c] == q
            if not hit.any():
                continue
            ends = np.append(starts[1:], lens.size)
            qh = np.flatnonzero(hit)
            g0, g1 = starts[pos_c[qh]], ends[pos_c[qh]]
            cnt = g1 - g0
            qi_parts.append(np.repeat(qh, cnt))
            # Indices g0..g1-1 for each hit, without a Python loop.
            offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            len_parts.append(lens[np.repeat(g0, cnt) + offs])
        out = np.full(q.size, np.nan)
        if not qi_parts:
            return out
        qi = np.concatenate(qi_parts)
        vals = np.concatenate(len_parts)
        counts = np.bincount(qi, minlength=q.size)
        have = counts > 0
        if self.stat == "mean":
            out[have] = np.bincount(qi, weights=vals, minlength=q.size)[have] / counts[have]
        else:
            order = np.lexsort((vals, qi))
            qi, vals = qi[order], vals[order]
            first = np.cumsum(counts) - counts
            if self.stat == "max":
                out[have] = vals[first[have] + counts[have] - 1]
            else:
                lo = first[have] + (counts[have] - 1) // 2
                hi = first[have] + counts[have] // 2
                out[have] = 0.5 * (vals[lo] + vals[hi])
        return out


def length_class(predicted_len: np.ndarray, generated: np.ndarray, max_len: int, *,
                 long_frac: float = 0.5, short_frac: float = 0.125) -> np.ndarray:
    """int (n,) length class of each request: :data:`LONG`, :data:`MEDIUM` or :data:`SHORT`.

    The expected total length is the prediction, raised to the partial length when the request
    has already outrun it (it is running long). Long: expected >= ``long_frac * max_len``;
    Short: expected < ``short_frac * max_len``; Medium otherwise. Without history (NaN
    prediction) a request is Medium until its partial length alone makes it Long.
    """
    pred = np.asarray(predicted_len, dtype=np.float64)
    expected = np.fmax(pred, generated)  # fmax: NaN prediction -> the partial length
    # Medium unless known and short; Long overrides. One where() instead of masked assignments:
    # the simulator classifies every active request of the cluster per decision.
    not_short = (expected >= short_frac * max_len) | np.isnan(pred)
    return np.where(expected >= long_frac * max_len, np.int8(LONG), not_short.view(np.int8))


def class_horizon(cls: np.ndarray, max_len: int, *, long_frac: float = 0.5, short_frac: float = 0.125
                  ) -> np.ndarray:
    """int64 (n,): the ``generated`` value at which a request of length class ``cls`` (from
    :func:`length_class` with the same fractions) may next change class; int64 max for Long.

    For a fixed prediction the class only grows with ``generated``: a Short request (known
    prediction and length below ``short_frac * max_len``) stays Short until its length reaches
    that threshold, a Medium one stays Medium until it reaches ``long_frac * max_len``.
    """
    long_at = math.ceil(long_frac * max_len)  # the first integer length >= the threshold
    short_ends = min(math.ceil(short_frac * max_len), long_at)  # (Long overrides Short)
    return np.array([short_ends, long_at, np.iinfo(np.int64).max], dtype=np.int64)[cls]
