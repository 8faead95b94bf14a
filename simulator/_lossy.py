"""Lossy acceptance: draft tokens accepted although the target alone would not have produced them.

Every lossless source gives native match lengths m_t (the run of draft tokens equal to the
target's own). A lossy method adds, per position p, ``skip[p]`` positions that are accepted
*unverified* when a draft reaches p at a mismatch, after which matching continues:

    m'_t = walk from t: p = t + m_t; while skip[p] > 0: p += skip[p]; p += m_p;  m'_t = p - t

capped at kmax, the drafter's proposal at t and the response end (the last token is always the
target's own). Drafting k at t then accepts min(k, m'_t) as usual, so every kernel path, policy
and the oracle work unchanged on ``match = m'``. Each position also carries a lossy flag (the
token accepted there differs from the target's); a kernel iteration that accepts a tokens from t
counts the flagged positions among the skipped ones it crossed (:meth:`LossyPositions.count`).

Methods (``[lossy] method = ...``):
- ``judge`` (Judge Decoding): at a mismatch the judge accepts the draft token with probability
  ``p`` (a keyed draw per position, like every other draw) and drafting continues: skip = 1 there,
  flagged lossy.
- ``entropy`` (Entropy-Adaptive Decoding): a fraction ``fraction`` of positions lie in low-entropy
  runs of mean length ``run_tokens``, where the small model generates without verification: a
  draft reaching a run at a mismatch is accepted to the run's end (at the drafter's cost); each
  run token differs from the target's with probability ``disagree`` (the lossy flag).
- ``spec-rl`` (SPEC-RL): the previous step's rollout of the same (prompt, sample) is verified as
  one long draft in the admission forward, with lenience ``lenience`` = l: a mismatch is accepted
  with probability 1 - 1/l (see docs/systems/engines.md for the derivation), decode drafts too.
  l = 1 is lossless and reduces exactly to ordinary match-length acceptance: the reused prefix is
  the native match from position 0 and the decode-phase match lengths are the base source's.

A position-keyed draw does not know which proposal reaches it; that (and the trace's rollout text
staying the same after a lossy acceptance) is the approximation, documented per method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.simulator._acceptance import (
    AcceptanceSource,
    StepAcceptance,
    StepRollouts,
    _chunks,
)
from specroll.simulator._keys import position_bits, rollout_keys, to_unit

METHODS = ("judge", "entropy", "spec-rl")
# Random streams of the lossy draws (the parametric source uses 1-3, 7 and 100+ for tree branches).
_JUDGE, _RUN_START, _RUN_LEN, _DISAGREE, _LENIENCE, _REUSE = 11, 12, 13, 14, 15, 16


@dataclass
class LossyPositions:
    """Per-position data of a step's lossy acceptance (flat positions, padded like ``match``)."""

    base: np.ndarray
    """int8: the native match m_t of the lossless source."""
    skip: np.ndarray
    """int8: positions accepted unverified when a draft reaches p at a mismatch (0: none)."""
    cum: np.ndarray
    """int32/int64 (positions + 1): cum[p] = lossy flags at positions < p."""

    def count(self, pos: np.ndarray, a: np.ndarray) -> int:
        """Lossy tokens among the ``a`` tokens accepted from each flat position ``pos``: the skipped
        stretches the walk from pos crosses before pos + a, counted by their flags."""
        keep = a > 0
        cur = np.asarray(pos, np.int64)[keep]
        end = cur + np.asarray(a, np.int64)[keep]
        total = 0
        base, skip, cum = self.base, self.skip, self.cum
        while cur.size:
            p = cur + base[cur]
            live = p < end
            p, end = p[live], end[live]
            if not p.size:
                break
            s = skip[p].astype(np.int64)
            total += int((cum[np.minimum(p + s, end)] - cum[p]).sum())
            cur = p + s
            go = (s > 0) & (cur < end)
            cur, end = cur[go], end[go]
        return total


def chain_match(base: np.ndarray, skip: np.ndarray, limit: np.ndarray, lo: int) -> np.ndarray:
    """m'_t for flat positions lo .. lo + len(limit) - 1 (see the module docstring); ``limit`` is each
    position's absolute cap (t + min(kmax, proposal), within the response)."""
    t = np.arange(lo, lo + limit.shape[0], dtype=np.int64)
    cur = np.minimum(t + base[t], limit)
    idx = np.flatnonzero((cur < limit) & (skip[cur] > 0))
    while idx.size:
        c = cur[idx]
        c = np.minimum(c + skip[c], limit[idx])
        c = np.minimum(c + base[c], limit[idx])  # base[c] is capped at the response end
        cur[idx] = c
        idx = idx[(c < limit[idx]) & (skip[c] > 0)]
    return (cur - t).astype(np.int8)


class LossyAcceptance(AcceptanceSource):
    """A lossless source (``base``) with a lossy method on top (see the module docstring)."""

    name = "lossy"

    def __init__(self, base: AcceptanceSource, method: str, *, file: str | None = None,
                 **params: Any) -> None:
        if method not in METHODS:
            raise SpecrollError(f"unknown lossy method '{method}'", file=file, field="lossy.method",
                                fix=f"use one of: {', '.join(METHODS)}")
        known = {"judge": {"p"}, "entropy": {"fraction", "run_tokens", "disagree"},
                 "spec-rl": {"lenience", "reuse", "reuse_alpha"}}[method]
        bad = sorted(set(params) - known)
        if bad:
            raise SpecrollError(f"lossy method '{method}' has no parameter '{bad[0]}'", file=file,
                                field=f"lossy.{bad[0]}", fix=f"use: {', '.join(sorted(known))}")
        self.base, self.method = base, method
        self.p = float(params.get("p", 0.3))
        self.fraction = float(params.get("fraction", 0.3))
        self.run_tokens = float(params.get("run_tokens", 8.0))
        self.disagree = float(params.get("disagree", 0.1))
        self.lenience = float(params.get("lenience", 1.0))
        self.reuse = params.get("reuse", True)
        ra = params.get("reuse_alpha")
        self.reuse_alpha = None if ra is None else float(ra)
        for name, v, ok in (("p", self.p, 0.0 <= self.p <= 1.0),
                            ("fraction", self.fraction, 0.0 <= self.fraction < 1.0),
                            ("run_tokens", self.run_tokens, self.run_tokens >= 1.0),
                            ("disagree", self.disagree, 0.0 <= self.disagree <= 1.0),
                            ("lenience", self.lenience, self.lenience >= 1.0),
                            ("reuse", self.reuse, isinstance(self.reuse, bool)),
                            ("reuse_alpha", ra, ra is None or 0.0 <= float(ra) <= 1.0)):
            if not ok:
                raise SpecrollError(f"bad value {v!r}", file=file, field=f"lossy.{name}",
                                    fix="p, fraction, disagree in [0, 1] (fraction < 1), run_tokens >= 1, "
                                        "lenience >= 1, reuse true/false")
        self.per_run = bool(getattr(base, "per_run", False))

    @property
    def kmax(self) -> int | None:
        return getattr(self.base, "kmax", None)

    # A per-run base (adaptive-drafter) keeps its state there.
    def start_run(self) -> None:
        self.base.start_run()

    def end_step(self, *args: Any, **kwargs: Any) -> Any:
        return self.base.end_step(*args, **kwargs)

    @property
    def may_be_lossy(self) -> bool:
        """Whether this configuration can accept a token the target would not have produced."""
        if self.method == "judge":
            return self.p > 0
        if self.method == "entropy":
            return self.fraction > 0 and self.disagree > 0
        return self.lenience > 1.0

    def prepare(self, rollouts: StepRollouts, seed: int) -> StepAcceptance:
        acc = self.base.prepare(rollouts, seed)
        ro = rollouts
        lens = ro.response_len.astype(np.int64)
        total = int(acc.offsets[-1])
        skip = np.zeros(acc.match.shape[0], np.int8)
        flag = np.zeros(acc.match.shape[0], np.int8)
        last = acc.offsets[1:] - 1  # each response's last token: always the target's own
        for lo, hi in _chunks(lens):
            a, b = int(acc.offsets[lo]), int(acc.offsets[hi])
            s, f = self._skips(ro, seed, lo, hi, lens[lo:hi], acc.kmax)
            skip[a:b], flag[a:b] = s, f
        skip[last[lens > 0]] = 0
        cum = np.zeros(acc.match.shape[0] + 1, np.int64 if total >= 1 << 31 else np.int32)
        np.cumsum(flag, out=cum[1:])
        base = acc.match.copy()
        if skip.any():
            plen = acc.proposal_len
            rend = np.repeat(last, lens)  # each position's response end
            for lo, hi in _chunks(lens):
                a, b = int(acc.offsets[lo]), int(acc.offsets[hi])
                t = np.arange(a, b, dtype=np.int64)
                room = acc.kmax if plen is None else np.minimum(plen[a:b], acc.kmax)
                limit = np.minimum(t + room, rend[a:b])
                acc.match[a:b] = chain_match(base, skip, limit, a)
        acc._match1 = None
        acc.lossy = LossyPositions(base=base, skip=skip, cum=cum)
        if self.method == "spec-rl" and self.reuse:
            if self.reuse_alpha is None:
                self._reuse(acc, ro)
            else:
                self._reuse_parametric(acc, ro, seed)
        return acc

    def _skips(self, ro: StepRollouts, seed: int, lo: int, hi: int, ln: np.ndarray, kmax: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """(skip, lossy flag) int8 per position of rollouts [lo, hi)."""
        pid, smp = ro.prompt_id[lo:hi], ro.sample[lo:hi]

        def unit(stream: int) -> np.ndarray:
            return to_unit(position_bits(rollout_keys(seed, ro.step, pid, smp, stream=stream), ln))

        if self.method in ("judge", "spec-rl"):
            prob = self.p if self.method == "judge" else 1.0 - 1.0 / self.lenience
            stream = _JUDGE if self.method == "judge" else _LENIENCE
            hit = (unit(stream) < np.float32(prob)).astype(np.int8) if prob > 0 else np.zeros(int(ln.sum()),
                                                                                                np.int8)
            return hit, hit
        # entropy: run starts at rate q per position (coverage 1 - exp(-q * run_tokens) = fraction),
        # geometric run lengths of mean run_tokens, runs cut at the response end.
        n = int(ln.sum())
        if self.fraction == 0.0:
            return np.zeros(n, np.int8), np.zeros(n, np.int8)
        q = -np.log1p(-self.fraction) / self.run_tokens
        starts = np.flatnonzero(unit(_RUN_START) < np.float32(q))
        if self.run_tokens > 1.0:
            v = np.maximum(unit(_RUN_LEN)[starts].astype(np.float64), 1e-12)
            length = 1 + np.floor(np.log(v) / np.log1p(-1.0 / self.run_tokens)).astype(np.int64)
        else:
            length = np.ones(starts.shape[0], np.int64)
        rend = np.repeat(np.cumsum(ln), ln)  # exclusive end of each position's response (local)
        stop = np.minimum(starts + length, rend[starts] - 1)  # the last token stays the target's
        cover = np.zeros(n + 1, np.int64)
        np.add.at(cover, starts, 1)
        np.add.at(cover, stop, -1)
        in_run = np.cumsum(cover[:n]) > 0
        # remaining run from p (capped at kmax: a draft never accepts more)
        idx = np.where(in_run, n, np.arange(n))
        nxt = np.minimum.accumulate(idx[::-1])[::-1]
        skip = np.minimum(np.where(in_run, nxt - np.arange(n), 0), kmax).astype(np.int8)
        flag = (in_run & (unit(_DISAGREE) < np.float32(self.disagree))).astype(np.int8)
        return skip, flag

    def _reuse_parametric(self, acc: StepAcceptance, ro: StepRollouts, seed: int) -> None:
        """SPEC-RL's admission forward with its own per-token agreement ``reuse_alpha`` between the
        cached rollout and the current policy (keyed draws, like the parametric source): the reused
        prefix ends at the first disagreement the lenience does not accept."""
        prev = np.zeros(ro.n, np.int64) if ro.prev_len is None else ro.prev_len.astype(np.int64)
        L = ro.response_len.astype(np.int64)
        cap = np.minimum(prev, L - 1)  # tokens of the cached draft that can be reused
        lens = ro.response_len.astype(np.int64)
        r = np.zeros(ro.n, np.int64)
        lossy = np.zeros(ro.n, np.int64)
        thr = np.uint32(min(self.reuse_alpha * 2.0**32, 2.0**32 - 1))
        for lo, hi in _chunks(lens):
            a = int(acc.offsets[lo])
            ln = lens[lo:hi]
            keys = rollout_keys(seed, ro.step, ro.prompt_id[lo:hi], ro.sample[lo:hi], stream=_REUSE)
            miss = position_bits(keys, ln) >= thr
            jump = acc.lossy.skip[a:a + miss.shape[0]] > 0
            local = np.arange(miss.shape[0]) - np.repeat(acc.offsets[lo:hi] - a, ln)
            stop = np.where(miss & ~jump, local, np.iinfo(np.int64).max)
            starts = (acc.offsets[lo:hi] - a).astype(np.int64)
            first = np.minimum.reduceat(stop, starts) if miss.shape[0] else np.zeros(0, np.int64)
            r[lo:hi] = np.minimum(first, cap[lo:hi])
            hits = np.concatenate([[0], np.cumsum(miss & jump)])
            lossy[lo:hi] = hits[starts + r[lo:hi]] - hits[starts]
        self._admission(acc, ro, r, prev, lossy)

    def _admission(self, acc: StepAcceptance, ro: StepRollouts, r: np.ndarray, prev: np.ndarray,
                   lossy: np.ndarray) -> None:
        acc.start_gen = r + 1  # tokens 0 .. r-1 reused, token r the target's own
        acc.prefill_len = ro.prompt_len.astype(np.int64) + prev
        acc.pre_drafted = prev
        acc.pre_lossy = lossy

    def _reuse(self, acc: StepAcceptance, ro: StepRollouts) -> None:
        """SPEC-RL's admission forward: verify the cached rollout (length prev_len) as one draft. The
        accepted prefix r is the lenient walk from position 0 (native runs continue past kmax: a run
        of kmax goes on from kmax positions later), capped at the cached length and at L - 1."""
        prev = np.zeros(ro.n, np.int64) if ro.prev_len is None else ro.prev_len.astype(np.int64)
        off = acc.offsets[:-1].astype(np.int64)
        L = ro.response_len.astype(np.int64)
        cap = off + np.minimum(prev, L - 1)
        base, skip, kmax = acc.lossy.base, acc.lossy.skip, acc.kmax
        cur = off.copy()
        lossy = np.zeros(ro.n, np.int64)
        idx = np.flatnonzero(cur < cap)
        while idx.size:
            c = cur[idx]
            b = base[c].astype(np.int64)
            p = np.minimum(c + b, cap[idx])
            run_on = (b >= kmax) & (p < cap[idx])  # a capped native run: it continues
            jump = ~run_on & (p < cap[idx]) & (skip[p] > 0)
            lossy[idx[jump]] += 1
            cur[idx] = np.where(run_on, p, np.where(jump, p + 1, p))
            idx = idx[(run_on | jump) & (cur[idx] < cap[idx])]
        self._admission(acc, ro, np.minimum(cur, cap) - off, prev, lossy)
