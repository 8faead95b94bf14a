"""Partial rollouts (CoPRIS-style): rollouts a step leaves unfinished are carried to the next one.

With ``[partial] enabled``, a step stops once ``target`` rollouts have completed (at the time of the
target-th completion, every engine finishes the iteration it is in and starts nothing more). That
time is found as the engines run (:func:`run_to_target`): they advance together in time slices,
each from a checkpoint; once a slice has seen the target-th completion, that slice alone is run
again from its checkpoint with the stop time as every engine's limit. Rollouts
still running keep their progress: in the next step they are admitted first, their prompt and output
re-prefilled under the new weights (the KV cache of the old weights is useless), and go on from where
they were; rollouts never started are simply admitted later. Tokens a completed rollout generated
under older weights are its off-policy tokens.

A carried rollout keeps its identity and its acceptance draws (they were keyed by the step it was
drawn for), so the next step's workload is the carried rollouts' slices of their own step's
acceptance followed by the new step's rollouts. The response length does not change with the new
weights (the trace's length is kept): the approximation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specroll.simulator._acceptance import StepAcceptance, StepRollouts
from specroll.simulator._lossy import LossyPositions

_RO_FIELDS = ("prompt_id", "sample", "prompt_len", "response_len", "finished")


@dataclass
class Carry:
    """Rollouts left over by a step: their rollout fields, acceptance slices and progress."""

    ro: StepRollouts
    acc: StepAcceptance
    gen0: np.ndarray
    """int64 per rollout: tokens already generated (0: never started)."""
    origin: np.ndarray
    """int64 per rollout: the trace step the rollout belongs to."""

    @property
    def n(self) -> int:
        return self.ro.n


def _positions(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat positions of ``rows``'s responses in order, their new offsets)."""
    lens = offsets[rows + 1] - offsets[rows]
    new_off = np.zeros(rows.shape[0] + 1, np.int64)
    np.cumsum(lens, out=new_off[1:])
    pos = np.repeat(offsets[rows] - new_off[:-1], lens) + np.arange(int(new_off[-1]))
    return pos, new_off


def _pad(x: np.ndarray, kmax: int) -> np.ndarray:
    return np.concatenate([x, np.zeros((kmax + 1,) + x.shape[1:], x.dtype)])


def concat(parts: list[tuple[StepRollouts, StepAcceptance, np.ndarray]], step: int) -> tuple[
        StepRollouts, StepAcceptance]:
    """One step's workload from ``(rollouts, acceptance, rows)`` parts, in order: every per-rollout
    and per-position array of the acceptance taken for those rows (match, proposal lengths, lossy
    positions, confidence, admission offsets)."""
    accs = [p[1] for p in parts]
    kmax, width = accs[0].kmax, accs[0].tree_width
    pos_l, lens_l = [], []
    for _, acc, rows in parts:
        pos, off = _positions(acc.offsets, rows)
        pos_l.append(pos)
        lens_l.append(np.diff(off))
    offsets = np.zeros(sum(x.shape[0] for x in lens_l) + 1, np.int64)
    np.cumsum(np.concatenate(lens_l), out=offsets[1:])

    def flat(get) -> np.ndarray:
        return _pad(np.concatenate([get(a)[p] for a, p in zip(accs, pos_l)]), kmax)

    def per_rollout(name: str, default) -> np.ndarray | None:
        if all(getattr(a, name) is None for a in accs):
            return None
        return np.concatenate([default(ro, rows) if getattr(a, name) is None else getattr(a, name)[rows]
                               for ro, a, rows in parts]).astype(np.int64)

    out = StepAcceptance(match=flat(lambda a: a.match), offsets=offsets, kmax=kmax, tree_width=width)
    if any(a.proposal_len is not None for a in accs):
        full = np.int8(kmax)
        out.proposal_len = flat(lambda a: a.proposal_len if a.proposal_len is not None
                                else np.full(a.match.shape[0], full, np.int8))
    if any(a.lossy is not None for a in accs):
        def part(name: str):
            def get(a):
                if a.lossy is None:
                    return a.match if name == "base" else np.zeros(a.match.shape[0], np.int8)
                return np.diff(a.lossy.cum).astype(np.int8) if name == "flag" else getattr(a.lossy, name)
            return get
        flag = flat(part("flag"))
        cum = np.zeros(flag.shape[0] + 1, np.int64)
        np.cumsum(flag, out=cum[1:])
        out.lossy = LossyPositions(base=flat(part("base")), skip=flat(part("skip")), cum=cum)
    if all(a.has_confidence for a in accs):
        def conf() -> np.ndarray:  # per position (1-D, parametric) or per position and depth (trace)
            pieces = []
            for a, p in zip(accs, pos_l):
                a.conf_at(p[:0])  # builds the part's confidence
                pieces.append(a._conf[p])
            return _pad(np.concatenate(pieces), kmax)
        out.conf_builder = conf
    one = lambda ro, rows: np.ones(rows.shape[0], np.int64)  # noqa: E731
    zero = lambda ro, rows: np.zeros(rows.shape[0], np.int64)  # noqa: E731
    out.start_gen = per_rollout("start_gen", one)
    out.prefill_len = per_rollout("prefill_len", lambda ro, rows: ro.prompt_len[rows])
    out.pre_drafted = per_rollout("pre_drafted", zero)
    out.pre_lossy = per_rollout("pre_lossy", zero)
    merged = StepRollouts(step=step, **{f: np.concatenate([getattr(ro, f)[rows] for ro, _, rows in parts])
                                        for f in _RO_FIELDS})
    return merged, out


def carry_over(ro: StepRollouts, acc: StepAcceptance, origin: np.ndarray, gen0: np.ndarray,
               completed: np.ndarray, progress: np.ndarray) -> Carry | None:
    """The rollouts of a stopped step that did not complete: started ones resume at their progress
    (``progress`` > 0) with their KV recomputed, the others wait as they were."""
    rows = np.flatnonzero(~completed)
    if rows.size == 0:
        return None
    cro, cacc = concat([(ro, acc, rows)], ro.step)
    prog = progress[rows]
    started = prog > 0
    g = np.where(started, prog, gen0[rows])
    if started.any():
        sg = np.ones(rows.shape[0], np.int64) if cacc.start_gen is None else cacc.start_gen.copy()
        pl = cro.prompt_len.astype(np.int64) if cacc.prefill_len is None else cacc.prefill_len.copy()
        sg[started] = prog[started]
        pl[started] = cro.prompt_len[started] + prog[started] - 1  # prompt + output re-prefilled
        cacc.start_gen, cacc.prefill_len = sg, pl
        for name in ("pre_drafted", "pre_lossy"):  # the cached-rollout pass was counted already
            x = getattr(cacc, name)
            if x is not None:
                x[started] = 0
    return Carry(ro=cro, acc=cacc, gen0=g.astype(np.int64), origin=origin[rows])


class FreshQueue:
    """The trace's rollouts in step order, handed out as steps need them: with a fixed concurrency a
    step starts rollouts beyond its own batch (CoPRIS keeps the concurrency up until enough are done),
    so rollouts of later trace steps can start early."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes
        self.step, self.row = 0, 0

    def take(self, n: int) -> list[tuple[int, np.ndarray]]:
        """Up to ``n`` rollouts as (trace step index, rows) chunks, in order."""
        out = []
        while n > 0 and self.step < len(self.sizes):
            k = min(n, self.sizes[self.step] - self.row)
            if k > 0:
                out.append((self.step, np.arange(self.row, self.row + k)))
                self.row += k
                n -= k
            if self.row >= self.sizes[self.step]:
                self.step, self.row = self.step + 1, 0
        return out


def merge_step(carry: Carry | None, fresh: list[tuple[StepRollouts, StepAcceptance, np.ndarray]], step: int
               ) -> tuple[StepRollouts, StepAcceptance, np.ndarray, np.ndarray]:
    """(rollouts, acceptance, gen0, origin step) of a step: the carried rollouts first (resumed ones
    are admitted before new ones), then the fresh ones (rows of their trace steps)."""
    parts = [] if carry is None else [(carry.ro, carry.acc, np.arange(carry.n))]
    parts += fresh
    if len(parts) == 1 and carry is None and parts[0][2].shape[0] == parts[0][0].n:
        ro, acc, _ = parts[0]  # exactly one whole trace step: use it as is
        mro, macc = ro, acc
    else:
        mro, macc = concat(parts, step)
    gen0 = np.concatenate(([] if carry is None else [carry.gen0]) + [np.zeros(r.shape[0], np.int64)
                                                                     for _, _, r in fresh])
    origin = np.concatenate(([] if carry is None else [carry.origin])
                            + [np.full(r.shape[0], ro.step, np.int64) for ro, _, r in fresh])
    return mro, macc, gen0.astype(np.int64), origin.astype(np.int64)


def run_to_target(kern, target: int, t_min: float) -> int:
    """Advance the static step of ``kern`` until its ``target``-th completion T (see the module
    docstring) and leave the unfinished rollouts stopped (their progress in ``out.progress``).
    ``t_min``: the shortest iteration (sizes the first slice). Returns the number of slices."""
    kern.start()
    h, span, slices = 0.0, 256.0 * t_min, 0
    while True:
        snap = kern.snapshot()
        end = h + span
        kern.until[:] = end
        kern.advance()
        slices += 1
        ends = kern.out.end_s
        seen = ends[ends < end]  # every completion before `end` is known once all engines reach it
        if seen.shape[0] >= target:
            stop = float(np.sort(seen)[target - 1])
            kern.restore(snap)
            kern.until[:] = stop
            kern.admit_past_until = False
            kern.advance()
            kern.stop_unfinished()
            return slices
        if kern.idle().all():
            return slices
        # The next slice ends a little after the target at the completion rate seen so far.
        rate = seen.shape[0] / end
        span = max(64.0 * t_min, 1.1 * (target - seen.shape[0]) / rate) if rate > 0 else 2.0 * span
        h = end

