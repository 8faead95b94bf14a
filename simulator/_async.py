"""Asynchronous RL (AReaL, Laminar): training takes finished rollouts while generation goes on.

The whole workload (every trace step's rollouts, in trace order) is one pool; the engines run as in
a ``queue`` step (simulator/_cluster.py, _dynamic.py), each finish an event. A trainer process
takes a batch of ``batch`` finished rollouts as soon as it may, trains on it (``train_s`` of its
tokens on the trainer's GPUs, ``[train].gpus``, separate from the engines'), and publishes the next
weight version; engines load it (``sync_s``) either at once (``sync = "interrupt"``: they stop at
their first iteration boundary after the publication and recompute the KV of their running
requests under the new weights, which then go on) or once drained (``"drain"``: an engine with
newer weights available admits nothing more, finishes what runs, then loads).

Staleness. Version v's weights are the initial ones updated v times; training step j trains on
batch j with version j and publishes v = j + 1. A rollout started under version s (the oldest
weights any of its tokens came from) may be trained on at most ``staleness`` = N versions later:
in a batch j <= s + N, its *deadline*. Both sides keep that exact:
- an engine at version v admits a new rollout only if the unconsumed rollouts (running or waiting
  for the trainer), with it, fit in the batches left up to its deadline: U + 1 <= B (v + N - j + 1),
  j the next batch (deadlines form a feasible earliest-deadline-first schedule of B per batch);
- the trainer takes finished rollouts earliest deadline first, and waits while taking them would
  leave more rollouts due by some batch than that batch and the ones before it can hold (a slow
  rollout due now is waited for).
At a full take the bound and U both drop by B, so an engine's admissions open only when it loads
newer weights: an engine never needs to hear about another's events. N = 0 is synchronous RL
without a barrier of the engines' own (each batch is exactly the rollouts started under its
version).

Reported: per version (its time on the engines, tokens generated under it, throughput), per
training step (wait for the batch, staleness of its rollouts, off-policy tokens = those generated
under versions older than the step's), busy time of engines and trainer.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np

from specroll.simulator._cluster import HIT, IDLE, EngineDriver
from specroll.simulator._dynamic import QueueFeeder
from specroll.simulator._kernel import StepKernel
from specroll.simulator._partial import concat

_NOT_STARTED, _RUNNING, _WAITING, _CONSUMED = 0, 1, 2, 3


class AsyncLoop:
    """One asynchronous run of a Simulator under a policy; ``run()`` is its SimPy process."""

    def __init__(self, sim: Any, env: Any, policy: Any, history: Any, bar: Any) -> None:
        cfg = sim.config
        self.sim, self.env, self.policy, self.history, self.bar = sim, env, policy, history, bar
        self.N, self.B = cfg.rl.staleness, cfg.rl.batch or sim.steps[0].n
        self.interrupt = cfg.rl.sync == "interrupt"
        parts = [(ro, sim.acceptance(i), np.arange(ro.n)) for i, ro in enumerate(sim.steps)]
        self.ro, self.acc = concat(parts, 0) if len(parts) > 1 else (sim.steps[0], sim.acceptance(0))
        R, E = self.ro.n, cfg.cluster.engines
        self.R, self.E = R, E
        self.state = np.zeros(R, np.int8)
        self.start_v = np.full(R, -1, np.int64)  # version a rollout started under
        self.cur_v = np.full(R, -1, np.int64)  # version of the weights it runs under now
        self.gen_at_v = np.zeros(R, np.int64)  # its tokens when it moved to cur_v
        self.batch_of = np.full(R, -1, np.int64)
        self.engine_v = np.zeros(E, np.int64)
        self.version_tokens: list[int] = [0]
        self.publish_s: list[float] = [0.0]  # when each version became available
        self.j = 0  # next batch
        self.U = 0  # unconsumed rollouts (running or waiting)
        self.U_by_deadline: dict[int, int] = {}
        self.ready: dict[int, deque] = {}  # deadline -> finished rollouts, in finish order
        self.n_ready = 0
        self.signal = env.event()
        self.idle: dict[int, Any] = {}
        self.steps: list[dict[str, Any]] = []
        self.kernel_wall = 0.0
        self.end_s = 0.0
        self.sync_s = sim.train_time(1)[1]
        # The shortest training any batch can take: what engines may run ahead of an update that is
        # not scheduled yet (the B cheapest rollouts' tokens).
        cheapest = np.sort(self.ro.prompt_len + self.ro.response_len)[:self.B]
        self.horizon = max(sim.train_time(int(cheapest.sum()))[0], 1e-9)

    # --- versions and the admission bound -----------------------------------------------------------
    def version_now(self) -> int:
        """Latest version published by now (publication times are known when training starts)."""
        now = self.driver.now()
        return int(np.searchsorted(np.asarray(self.publish_s), now, side="right")) - 1

    def allowed(self, e: int) -> int:
        return max(0, self.B * (int(self.engine_v[e]) + self.N - self.j + 1) - self.U)

    def _load(self, e: int, v: int) -> None:
        """Engine e loads version v: its running requests' tokens so far go to their old version."""
        rows, gen = self.kern.running_rows(np.array([e]))
        pending = self.driver.to_admit[e]
        if pending is not None:  # admitted but not yet in the kernel: nothing generated yet
            self.cur_v[pending] = v
        for old in np.unique(self.cur_v[rows]).tolist():
            sel = self.cur_v[rows] == old
            self.version_tokens[old] += int((gen[sel] - self.gen_at_v[rows[sel]]).sum())
        self.cur_v[rows] = v
        self.gen_at_v[rows] = gen
        self.engine_v[e] = v
        self.driver.load_weights(e, self.sync_s)

    # --- the engines ----------------------------------------------------------------------------------
    def feeder(self, e: int, reason: str, rows: np.ndarray) -> Any:
        drv, kern = self.driver, self.kern
        if rows.shape[0]:
            self._finished(rows)
        v = self.version_now()
        newer = v > self.engine_v[e]
        if newer and (self.interrupt or not drv.has_work(e)):
            self._load(e, v)
        if not newer or self.interrupt or not drv.has_work(e):
            self._admit(e)
        kern.until[e] = self._until()
        if drv.has_work(e):
            return True
        if self.queue.left == 0 and reason in (HIT, IDLE, "limit"):
            return None  # nothing left to start
        ev = self.env.event()
        self.idle[e] = ev
        return ev

    def _admit(self, e: int) -> None:
        n = self.allowed(e)
        if n <= 0:
            return
        got = self.queue.take_for(e, limit=n)
        if got.shape[0] == 0:
            return
        v = int(self.engine_v[e])
        if self.history is not None:
            self.kern.predicted[got] = self.history.predict(self.ro.prompt_id[got], v)
        self.driver.admit(e, got)
        self.state[got] = _RUNNING
        self.start_v[got] = v
        self.cur_v[got] = v
        self.U += got.shape[0]
        d = v + self.N
        self.U_by_deadline[d] = self.U_by_deadline.get(d, 0) + got.shape[0]
        self._notify()

    def _until(self) -> float:
        """An engine's time limit: the next publication if one is scheduled, else as far as no
        update can come before (the cheapest training after a take now)."""
        if not self.interrupt:
            return np.inf
        now = self.driver.now()
        later = [t for t in self.publish_s if t > now]
        return later[0] if later else now + self.horizon

    def _finished(self, rows: np.ndarray) -> None:
        L = self.ro.response_len[rows]
        for old in np.unique(self.cur_v[rows]).tolist():
            sel = self.cur_v[rows] == old
            self.version_tokens[old] += int((L[sel] - self.gen_at_v[rows[sel]]).sum())
        self.state[rows] = _WAITING
        for d, r in zip((self.start_v[rows] + self.N).tolist(), rows.tolist()):
            self.ready.setdefault(d, deque()).append(r)
        self.n_ready += rows.shape[0]
        self._notify()

    def _notify(self) -> None:
        if not self.signal.triggered:
            self.signal.succeed()

    # --- the trainer ----------------------------------------------------------------------------------
    def _take(self) -> np.ndarray | None:
        """The next batch, earliest deadline first, or None while taking it would break a deadline."""
        left = self.R - int((self.state == _CONSUMED).sum())
        b = self.B if self.n_ready >= self.B else (self.n_ready if self.n_ready == left else 0)
        if b == 0:
            return None
        took: dict[int, int] = {}
        need = b
        for d in sorted(self.ready):
            k = min(need, len(self.ready[d]))
            took[d] = k
            need -= k
            if need == 0:
                break
        remain = 0
        for d in sorted(self.U_by_deadline):
            remain += self.U_by_deadline[d] - took.get(d, 0)
            if remain > self.B * max(d - self.j, 0):
                return None  # wait for rollouts due sooner
        out = []
        for d, k in took.items():
            out += [self.ready[d].popleft() for _ in range(k)]
            self.U_by_deadline[d] -= k
            if not self.ready[d]:
                del self.ready[d]
        return np.array(out, np.int64)

    def trainer(self):
        env = self.env
        last = 0.0
        while True:
            batch = self._take()
            while batch is None:
                self.signal = env.event()
                yield self.signal
                batch = self._take()
            j, t_take = self.j, self.driver.now()
            self.j += 1
            self.U -= batch.shape[0]
            self.n_ready -= batch.shape[0]
            self.state[batch] = _CONSUMED
            self.batch_of[batch] = j
            ro = self.ro
            tokens = int(ro.prompt_len[batch].sum() + ro.response_len[batch].sum())
            train_s = self.sim.train_time(tokens)[0]
            publish = t_take + train_s
            self.publish_s.append(publish)
            self.version_tokens.append(0)
            if self.interrupt:  # engines not advanced yet may run up to the publication
                wait = self.driver.waiting
                self.kern.until[wait] = np.maximum(self.kern.until[wait], publish)
            self._record(j, batch, t_take - last, train_s)
            yield env.timeout(train_s)
            last = self.driver.now()
            if self.history is not None:
                self.history.record(np.full(batch.shape[0], j), ro.prompt_id[batch], ro.response_len[batch],
                                    ro.finished[batch])
            for e, ev in list(self.idle.items()):  # idle engines load the new weights and admit
                del self.idle[e]
                self.driver.wake(e, last)
                ev.succeed()
            if (self.state == _CONSUMED).all():
                self.end_s = last + self.sync_s
                return

    def _record(self, j: int, batch: np.ndarray, wait_s: float, train_s: float) -> None:
        stale = j - self.start_v[batch]
        L = self.ro.response_len[batch]
        on = np.where(self.cur_v[batch] == j, L - self.gen_at_v[batch], 0)
        self.steps.append({"step": j, "rollouts": int(batch.shape[0]), "tokens": int(L.sum()),
                           "wait_s": float(wait_s), "train_s": float(train_s), "sync_s": self.sync_s,
                           "staleness_max": int(stale.max()), "staleness_mean": float(stale.mean()),
                           "off_policy_tokens": int((L - on).sum())})

    # --- the run ----------------------------------------------------------------------------------------
    def run(self):
        sim, env = self.sim, self.env
        self.policy.reset(self.E)
        k0 = time.perf_counter()
        self.kern = StepKernel(self.ro, self.acc, None, None, np.full(self.R, np.nan), sim.spec, sim.profile,
                               self.policy, step=0, rid_base=0, max_len=sim.max_len, fast=sim.fast)
        self.driver = EngineDriver(env, self.kern, self.feeder)
        self.queue = QueueFeeder(self.driver, np.arange(self.R, dtype=np.int64))
        self.kern.events[:] = True  # every finish feeds the trainer
        for e in range(self.E):  # the start: each engine up to the bound
            self._admit(e)
            self.kern.until[e] = self._until()
        self.kernel_wall += time.perf_counter() - k0
        trainer = env.process(self.trainer())
        yield env.all_of(self.driver.start() + [trainer])
        k0 = time.perf_counter()
        self.out = self.kern.finalize()
        self.kernel_wall += time.perf_counter() - k0 + self.driver.kernel_wall
        self.flushes = self.driver.flushes

    # --- what the run reports -------------------------------------------------------------------------
    def report(self) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, dict[str, np.ndarray]]]:
        """(the run as one step record, the summary's async keys, the extra tables)."""
        from specroll.simulator._records import step_record

        out, ro, cfg = self.out, self.ro, self.sim.config
        makespan = self.end_s
        gen_span = float(np.nanmax(out.end_s)) if self.R else 0.0
        train_s = sum(s["train_s"] for s in self.steps)
        n_sync = len(self.publish_s) - 1
        rec = step_record(ro, out, gen_span, train_s, n_sync * self.sync_s, makespan, self.E, {})
        stale = self.batch_of - self.start_v
        L = ro.response_len
        end = self.publish_s[1:] + [makespan]
        versions = {"version": np.arange(len(self.publish_s), dtype=np.int64),
                    "start_s": np.array(self.publish_s), "end_s": np.array(end),
                    "tokens": np.array(self.version_tokens, np.int64)}
        span = np.maximum(versions["end_s"] - versions["start_s"], 1e-12)
        versions["tokens_per_s"] = versions["tokens"] / span
        off = sum(s["off_policy_tokens"] for s in self.steps)
        busy = float(out.engine_busy_s.sum())
        gpus = cfg.train.gpus or cfg.cluster.engines * cfg.cluster.tp
        extra = {
            "rl": {"mode": "async", "staleness": self.N, "batch": self.B, "sync": cfg.rl.sync},
            "train_steps": self.steps,
            "versions": [dict(zip(versions, vals)) for vals in zip(*(v.tolist() for v in versions.values()))],
            "staleness_max": int(stale.max()), "staleness_mean": float(stale.mean()),
            "off_policy_tokens": off, "completed_tokens": int(L.sum()),
            "engine_busy_s": busy, "trainer_busy_s": train_s, "trainer_gpus": gpus,
            "engine_busy_fraction": busy / max(self.E * makespan, 1e-300),
            "trainer_busy_fraction": train_s / max(makespan, 1e-300),
        }
        tables = {"versions": versions,
                  "requests_extra": {"start_version": self.start_v, "train_step": self.batch_of,
                                     "staleness": stale}}
        return [rec], extra, tables
