"""The engines as SimPy processes over one vectorized kernel.

Each engine is a process: it asks to be advanced, the kernel runs it until its next *cluster
event* (a finish the cluster watches, its time limit, the end of its work: see
``StepKernel.advance``), the process sleeps until the simulated time of that event, and then the
cluster's *feeder* reacts (refills it from a central queue, counts the completions, interrupts it
for a weight update, ...) before the engine asks again.

Advancing engines one at a time would cost a kernel call per event. Instead a request is
answered lazily, by one kernel call for every engine that is waiting at that moment: an engine
that has handled its event at time t cannot have its next one before ``t + lb`` (``lb``: as many
of the cheapest possible iterations as its closest finish needs, or its time limit), so the
driver flushes all waiting engines together at the earliest such bound. Nothing an engine does
between two of its events depends on another engine, and every engine is advanced before
simulated time reaches its next event, so the result is the same as advancing each engine at
the exact time of its event: events are handled in simulated-time order.

What the cluster does to an engine at its event (admit rollouts, wake it from idle, load new
weights) is queued (:meth:`EngineDriver.admit`, :meth:`wake`, :meth:`load_weights`) and applied
at the next flush, for all engines at once: the engine is not advanced in between, so this is the
same as doing it at once, with one matrix rewrite per flush instead of one per event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from specroll.calibration import IterationBatch
from specroll.simulator._step import CTX, GEN, LEN

HIT, LIMIT, IDLE = "hit", "limit", "idle"


def min_iteration_time(cost: Any) -> float:
    """Seconds of the cheapest possible iteration (one request, one query token, one cached token):
    every iteration takes at least this (the cost model grows with each of its features)."""
    one = np.ones(1)
    b = IterationBatch(n=one, q_sum=one, q_max=one, c_sum=one, c_max=one, qc_sum=2 * one,
                       draft_tokens=np.zeros(1))
    return float(np.asarray(cost.iteration_time(b))[0])


class EngineDriver:
    """One SimPy process per engine of ``kern``; ``feeder(e, reason, rows)`` is the cluster's reaction
    to engine e's event (``rows``: its rollouts that completed since its last event). It returns
    True when the engine goes on, a SimPy event to wait for first (an idle engine waiting for work),
    or None when the engine is done."""

    def __init__(self, env: Any, kern: Any, feeder: Callable[[int, str, np.ndarray], Any] | None = None
                 ) -> None:
        self.env, self.kern = env, kern
        # Kernel clocks count from the simulated time the driver starts at (a step's start).
        self.t0 = float(env.now)
        self.feeder = feeder if feeder is not None else _static
        E = kern.spec.n_engines
        self.t_min = max(min_iteration_time(kern.cost), 1e-12)
        # Tokens one iteration can add to a request: at most kmax accepted, plus the target's own.
        self.per_iter = int(kern.acc.kmax) + 1
        self.waiting = np.zeros(E, bool)
        self.lb = np.full(E, np.inf)
        self.ready: list[Any] = [None] * E
        self.reason = [IDLE] * E
        self.rows: list[np.ndarray] = [np.empty(0, np.int64)] * E
        self._flush_at = np.inf
        self.kernel_wall = 0.0
        self.flushes = 0
        self.done_at = np.full(E, np.nan)  # simulated time each engine's process ended
        # What the cluster queued for each engine, applied at the next flush (see the docstring).
        self.to_admit: list[np.ndarray | None] = [None] * E
        self.n_to_admit = np.zeros(E, np.int64)
        self.kv_to_admit = np.zeros(E)
        self.min_left = np.full(E, np.iinfo(np.int64).max)  # tokens the closest queued rollout needs
        self.wake_at = np.full(E, np.nan)
        self.pause = np.zeros(E)
        self.reload = np.zeros(E, bool)

    def now(self) -> float:
        """The simulated time on the kernel's clock."""
        return float(self.env.now) - self.t0

    # --- what the cluster does to engines (applied at the next flush) ---------------------------
    def admit(self, e: int, rows: np.ndarray) -> None:
        """Admit ``rows`` (this kernel's rollouts) on engine e, after its preempted requests."""
        if rows.shape[0] == 0:
            return
        kern = self.kern
        prev = self.to_admit[e]
        self.to_admit[e] = rows if prev is None else np.concatenate([prev, rows])
        self.n_to_admit[e] += rows.shape[0]
        self.kv_to_admit[e] += float(kern.kv0[rows].sum())
        start = 1 if kern.acc.start_gen is None else kern.acc.start_gen[rows]
        self.min_left[e] = min(self.min_left[e], int((kern.ro.response_len[rows] - start).min()))

    def wake(self, e: int, t: float) -> None:
        """Idle engine e resumes at time t (its clock jumps there: idle, not busy)."""
        self.wake_at[e] = t

    def load_weights(self, e: int, pause_s: float) -> None:
        """Engine e loads new weights (``pause_s``), then recomputes its running requests' KV."""
        self.pause[e] += pause_s
        self.reload[e] = True

    def room(self, e: int) -> tuple[int, float]:
        """(free slots, KV tokens left under the admission budget) of engine e, counting what is queued
        for it and its preempted requests (readmitted first)."""
        kern = self.kern
        lo = int(kern.cnt[:e].sum())
        kv = float(kern.S[CTX, lo:lo + int(kern.cnt[e])].sum()) + self.kv_to_admit[e]
        free = kern.spec.max_batch - int(kern.cnt[e]) - int(self.n_to_admit[e])
        if kern.requeued[e]:
            free -= len(kern.requeued[e])
            kv += sum(float(c[CTX]) for c, _ in kern.requeued[e])
        budget = kern.spec.kv_capacity * (1.0 - kern.spec.kv_watermark)
        return max(free, 0), budget - kv

    def has_work(self, e: int) -> bool:
        return bool(self.kern.cnt[e] > 0 or self.n_to_admit[e] > 0 or self.kern.requeued[e])

    def _apply(self) -> None:
        kern = self.kern
        woken = np.flatnonzero(np.isfinite(self.wake_at))
        if woken.shape[0]:
            for t in np.unique(self.wake_at[woken]).tolist():
                kern.wake(woken[self.wake_at[woken] == t], t)
            self.wake_at[:] = np.nan
        if self.reload.any():
            for p in np.unique(self.pause[self.reload]).tolist():
                kern.reprefill(np.flatnonzero(self.reload & (self.pause == p)), p)
            self.reload[:] = False
            self.pause[:] = 0.0
        if self.n_to_admit.any():
            eng = np.flatnonzero(self.n_to_admit)
            rows = np.concatenate([self.to_admit[e] for e in eng.tolist()])
            kern.admit_rows(rows, np.repeat(eng, self.n_to_admit[eng]))
            for e in eng.tolist():
                self.to_admit[e] = None
            self.n_to_admit[:] = 0
            self.kv_to_admit[:] = 0.0
            self.min_left[:] = np.iinfo(np.int64).max

    def start(self, engines: np.ndarray | None = None) -> list[Any]:
        """Start the processes of ``engines`` (default all); returns them."""
        ids = range(self.kern.spec.n_engines) if engines is None else np.flatnonzero(engines).tolist()
        return [self.env.process(self._engine(e)) for e in ids]

    # --- one engine ---------------------------------------------------------------------------------
    def _engine(self, e: int):
        env, kern = self.env, self.kern
        while True:
            yield self._request(e)
            t = self.t0 + float(kern.clock[e])
            if t > env.now:
                yield env.timeout(t - env.now)
            rows, self.rows[e] = self.rows[e], self.rows[e][:0]
            go = self.feeder(e, self.reason[e], rows)
            if go is None:
                self.done_at[e] = env.now
                return
            if go is not True:  # an idle engine waits for the cluster to give it work
                yield go

    def _request(self, e: int) -> Any:
        """An event that fires once engine e has been advanced to its next cluster event."""
        ev = self.env.event()
        self.ready[e] = ev
        self.waiting[e] = True
        lb = self.t0 + self._lower_bound(e)
        self.lb[e] = lb
        if lb < self._flush_at:
            self._flush_at = lb
            timer = self.env.timeout(max(lb - self.env.now, 0.0))
            timer.callbacks.append(lambda _ev, at=lb: self._flush(at))
        return ev

    def _lower_bound(self, e: int) -> float:
        """Earliest simulated time engine e's next cluster event can come."""
        kern = self.kern
        clock = float(kern.clock[e]) if np.isnan(self.wake_at[e]) else float(self.wake_at[e])
        lo, n = int(kern.cnt[:e].sum()), int(kern.cnt[e])
        if n == 0 and self.n_to_admit[e] == 0:
            return clock  # idle or only preempted requests: nothing to wait for
        # Tokens before its closest finish (watched) or its last one (not watched: when it idles).
        left = [int(self.min_left[e])] if self.n_to_admit[e] else []
        if n:
            span = kern.S[LEN, lo:lo + n] - kern.S[GEN, lo:lo + n]
            left.append(int(span.min()) if kern.events[e] else int(span.max()))
        need = min(left) if kern.events[e] else max(left)
        lb = clock + self.t_min * max(1, -(-need // self.per_iter))
        return min(lb, max(float(kern.until[e]), clock))

    def _flush(self, at: float) -> None:
        if at != self._flush_at or not self.waiting.any():
            return  # superseded by an earlier flush
        self._flush_at = np.inf
        engines = self.waiting.copy()
        self.waiting[:] = False
        kern = self.kern
        t0 = time.perf_counter()
        self._apply()
        kern.advance(engines)
        self.kernel_wall += time.perf_counter() - t0
        self.flushes += 1
        done = kern.take_completed()
        if done.shape[0]:
            by = kern.out.engine[done]
            for e in np.unique(by).tolist():
                self.rows[e] = np.concatenate([self.rows[e], done[by == e]])
        idle = kern.idle()
        for e in np.flatnonzero(engines).tolist():
            self.reason[e] = HIT if kern.hit[e] else (IDLE if idle[e] else LIMIT)
            self.ready[e].succeed()

    def flush_now(self) -> None:
        """Advance every waiting engine at once (before the cluster reads all engines' states)."""
        if self.waiting.any():
            self._flush_at = self.env.now
            self._flush(self.env.now)


def _static(e: int, reason: str, rows: np.ndarray) -> Any:
    """A static step's engines: nothing to do at their events; done once out of work."""
    return None if reason == IDLE else True
