"""Dynamic dispatch: rollouts handed to engines while they run (the cluster feeders of _cluster.py).

- ``queue``: one central queue (trace order, or longest predicted first); at the start of the step
  its head is dealt round-robin to the engines, then an engine that finishes a request takes the
  next rollouts from it (as many as its free slots and KV budget allow), in simulated-time order
  of the finishes: SGLang's router / vLLM data parallelism with a shared queue.
- ``seer`` (Seer's divided rollout, arXiv 2511.14617): each prompt's group is split into chunks of
  ``chunk`` samples, queued longest-predicted group first; a global scheduler runs every
  ``interval_s`` and sends each next chunk to the engine with the least KV in use among those with
  room for it. The scheduler needs every engine's state at one moment, so engines stop at each
  round (their time limit) and a freed slot waits for the next round.
- ``rollpacker`` (RollPacker's tail batching, arXiv 2509.21009): see simulator/_sync.py; within a
  round it is the central queue.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from specroll.simulator._cluster import IDLE, LIMIT, EngineDriver


def queue_order(pred: np.ndarray, order: str) -> np.ndarray:
    """Rows in the central queue's order: trace order, or longest predicted first (a prompt with no
    history counts as the step's mean prediction)."""
    n = pred.shape[0]
    if order == "fifo":
        return np.arange(n, dtype=np.int64)
    known = np.isfinite(pred)
    work = np.where(known, pred, float(pred[known].mean()) if known.any() else 1.0)
    return np.argsort(-work, kind="stable").astype(np.int64)


class QueueFeeder:
    """The ``queue`` dispatch of one synchronous step (see the module docstring)."""

    def __init__(self, driver: EngineDriver, rows: np.ndarray) -> None:
        self.driver, self.kern = driver, driver.kern
        self.rows, self.head = rows.astype(np.int64), 0
        self.kern.fed[:] = True
        self.kern.events[:] = self.left > 0

    @property
    def left(self) -> int:
        return self.rows.shape[0] - self.head

    def fill(self) -> None:
        """Time 0: deal the queue's head round-robin to the engines, each up to its batch cap and KV
        budget (at least one rollout each), so that the engines start balanced."""
        kern, E = self.kern, self.kern.spec.n_engines
        n = min(self.left, E * kern.spec.max_batch)
        if n == 0:
            return
        cand = self.rows[self.head:self.head + n]
        eng = np.arange(n) % E
        order = np.argsort(eng, kind="stable")  # each engine's candidates, in queue order
        counts = np.bincount(eng, minlength=E)
        first = (np.cumsum(counts) - counts)[counts > 0]
        kv = kern.kv0[cand[order]]
        need = np.cumsum(kv)
        need -= np.repeat(need[first] - kv[first], counts[counts > 0])  # within each engine
        budget = kern.spec.kv_capacity * (1.0 - kern.spec.kv_watermark)
        rank = np.arange(n) - np.repeat(first, counts[counts > 0])
        # Each engine takes its candidates up to the first that does not fit (at least one).
        take = np.maximum(np.minimum.reduceat(np.where(need <= budget, n, rank), first), 1)
        taken = np.empty(n, bool)
        taken[order] = rank < np.repeat(take, counts[counts > 0])
        for e in np.flatnonzero(counts).tolist():
            self.driver.admit(e, cand[taken & (eng == e)])
        # Rollouts dealt but refused for KV go back to the head, in order.
        self.rows = np.concatenate([self.rows[:self.head], cand[~taken], self.rows[self.head + n:]])
        self.kern.events[:] = self.left > 0

    def take_for(self, e: int, limit: int | None = None) -> np.ndarray:
        """The next rollouts of the queue that engine e admits now (at most ``limit``)."""
        if self.left == 0:
            return self.rows[:0]
        free, kv_left = self.driver.room(e)
        if limit is not None:
            free = min(free, limit)
        cand = self.rows[self.head:self.head + free]
        take = int(np.searchsorted(np.cumsum(self.kern.kv0[cand]), kv_left, side="right"))
        if take == 0 and not self.driver.has_work(e) and self.left:
            take = 1  # an idle engine always makes progress
        self.head += take
        return cand[:take] if take else self.rows[:0]

    def __call__(self, e: int, reason: str, rows: np.ndarray) -> Any:
        got = self.take_for(e)
        self.driver.admit(e, got)
        if self.left == 0:
            self.kern.events[:] = False
        if reason == IDLE and got.shape[0] == 0 and not self.driver.has_work(e):
            return None  # nothing left for this engine in this step
        return True


def seer_chunks(prompt_id: np.ndarray, pred: np.ndarray, chunk: int) -> list[np.ndarray]:
    """Seer's divided rollout: each prompt's rollouts (a group) in chunks of ``chunk``, the groups
    ordered longest predicted first (a group with no history: the step's mean)."""
    order = queue_order(pred, "longest")  # a group's rows share its prediction: they stay together
    pid = prompt_id[order]
    out = []
    for g in np.split(order, np.flatnonzero(pid[1:] != pid[:-1]) + 1):
        out += [g[i:i + chunk] for i in range(0, g.shape[0], chunk)]
    return out


class SeerFeeder:
    """The ``seer`` dispatch of one synchronous step (see the module docstring)."""

    def __init__(self, env: Any, driver: EngineDriver, chunks: list[np.ndarray], interval_s: float) -> None:
        self.env, self.driver, self.kern = env, driver, driver.kern
        self.chunks, self.head, self.interval = chunks, 0, float(interval_s)
        self.kern.fed[:] = True
        self.idle: dict[int, Any] = {}
        self.rounds = 0

    @property
    def left(self) -> int:
        return len(self.chunks) - self.head

    def schedule(self) -> None:
        """One round of the global scheduler: each next chunk to the engine with the least KV in use
        among those with free slots and KV room for it, until the head chunk fits nowhere."""
        drv, kern = self.driver, self.kern
        E = kern.spec.n_engines
        self.rounds += 1
        room = [drv.room(e) for e in range(E)]
        free = np.array([r[0] for r in room], np.int64)
        kv_left = np.array([r[1] for r in room])
        budget = kern.spec.kv_capacity * (1.0 - kern.spec.kv_watermark)
        while self.left:
            c = self.chunks[self.head]
            need = float(kern.kv0[c].sum())
            ok = (free >= c.shape[0]) & ((kv_left >= need) | (kv_left >= budget))
            if not ok.any():
                break
            e = int(np.flatnonzero(ok)[np.argmin((budget - kv_left)[ok])])  # least KV in use
            drv.admit(e, c)
            free[e] -= c.shape[0]
            kv_left[e] -= need
            self.head += 1
        woken = [e for e in self.idle if drv.n_to_admit[e]]
        for e in woken:
            drv.wake(e, drv.now())
            self.idle.pop(e).succeed()
        kern.until[:] = drv.now() + self.interval if self.left else np.inf

    def ticks(self):
        """The scheduler's rounds, every ``interval_s`` while chunks wait (a SimPy process)."""
        while self.left:
            yield self.env.timeout(self.interval)
            self.driver.flush_now()  # every engine at its first iteration boundary past the round
            self.schedule()
        for ev in self.idle.values():  # nothing more to hand out: idle engines are done
            ev.succeed()
        self.idle.clear()

    def __call__(self, e: int, reason: str, rows: np.ndarray) -> Any:
        if reason == LIMIT or reason != IDLE or self.driver.has_work(e):
            return True
        if not self.left:
            return None
        ev = self.env.event()
        self.idle[e] = ev
        return ev
