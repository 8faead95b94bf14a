"""The synchronous RL loop: each step's rollouts on the engines, the barrier (the step waits for its
last rollout), then the step's training and weight sync.

A step's engines are SimPy processes over one kernel (simulator/_cluster.py); the dispatch rule
decides how they get rollouts: a static rule deals the whole step when it starts (every engine then
runs to the end of its share without a cluster event: one kernel advance, the same numbers as
before the cluster became discrete-event), a dynamic one (simulator/_dynamic.py) hands them out as
engines free slots. Two rules change what a step is:
- ``[partial]`` (CoPRIS): a step's pool is the carried rollouts plus fresh ones beyond its batch,
  and it stops at its target-th completion (simulator/_partial.py);
- ``rollpacker`` (tail batching): prompts predicted longer than ``long_threshold`` of the cap are
  deferred; each trace step runs as a short round without them, and the deferred ones run in long
  rounds of their own once ``long_round`` of them wait (and at the end). Every round is an RL step
  (its own training); rounds are numbered in the summary's ``step``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from specroll.simulator._cluster import EngineDriver
from specroll.simulator._config import STATIC_DISPATCH
from specroll.simulator._dynamic import QueueFeeder, SeerFeeder, queue_order, seer_chunks
from specroll.simulator._kernel import StepKernel
from specroll.simulator._partial import FreshQueue, carry_over, concat, merge_step, run_to_target
from specroll.simulator._records import partial_stats, step_record
from specroll.simulator._workload import dispatch


class SyncLoop:
    """One synchronous run of a Simulator under a policy; ``run()`` is its SimPy process."""

    def __init__(self, sim: Any, env: Any, policy: Any, history: Any, bar: Any) -> None:
        self.sim, self.env, self.policy, self.history, self.bar = sim, env, policy, history, bar
        self.records: list[dict[str, Any]] = []
        self.outcomes: list[tuple[Any, ...]] = []
        self.training: list[tuple[int, int, float, float]] = []
        self.kernel_wall = 0.0
        self.rid_base = 0
        self.carry = None
        self.partial = sim.config.partial.enabled
        self.fresh = FreshQueue([ro.n for ro in sim.steps]) if self.partial else None

    def run(self):
        if self.sim.config.cluster.dispatch == "rollpacker":
            yield from self._rollpacker()
            return
        for i, ro_new in enumerate(self.sim.steps):
            if self.partial:
                ro, acc, gen0, origin = self._pool(ro_new)
                target = min(self.sim.config.partial.target or ro_new.n, ro.n)
            else:
                ro, acc, gen0, origin, target = ro_new, self.sim.acceptance(i), None, None, None
            yield from self._step(i, ro, acc, gen0, origin, target)

    def _pool(self, ro_new: Any) -> tuple[Any, ...]:
        """Partial rollouts: carried rollouts, then fresh ones up to the step's batch plus the
        concurrency (rollouts start as others finish until `target` are done)."""
        sim = self.sim
        have = 0 if self.carry is None else self.carry.n
        extra = sim.spec.max_batch * sim.config.cluster.engines
        chunks = self.fresh.take(max(ro_new.n + extra - have, 0))
        parts = [(sim.steps[j], sim.acceptance(j), rows) for j, rows in chunks]
        return merge_step(self.carry, parts, ro_new.step)

    def _predict(self, ro: Any) -> np.ndarray:
        h = self.history
        return np.asarray(h.predict(ro.prompt_id, ro.step) if h is not None else np.full(ro.n, np.nan),
                          dtype=np.float64)

    # --- one step -----------------------------------------------------------------------------------
    def _step(self, i: int, ro: Any, acc: Any, gen0: Any, origin: Any, target: int | None,
              pred: np.ndarray | None = None):
        sim, env, E = self.sim, self.env, self.sim.config.cluster.engines
        t_start = env.now
        pred = self._predict(ro) if pred is None else pred
        out, done_at = yield from self._rollout(i, ro, acc, pred, gen0, target)
        rollout_s = env.now - t_start
        completed = np.isfinite(out.end_s)
        tokens = int(ro.response_len[completed].sum() + ro.prompt_len[completed].sum())
        train_s, sync_s = sim.train_time(tokens)
        extra: dict[str, Any] = {}
        if sim.per_run:  # TLT: every engine trains the drafter from its last rollout to the barrier
            idle = float((rollout_s - out.engine_busy_s).sum())
            extra = {"drafter_train_s": idle, **sim.source.end_step(idle)}
            for e, t in enumerate(done_at.tolist()):
                if env.now > t:
                    self.training.append((len(self.records), e, t - t_start, env.now - t_start))
        if self.partial:
            extra.update(partial_stats(ro, out, gen0, completed))
            self.carry = carry_over(ro, acc, origin, gen0, completed, out.progress)
            extra["carried_over"] = 0 if self.carry is None else self.carry.n
        yield env.timeout(train_s)
        yield env.timeout(sync_s)
        if self.history is not None:
            self.history.record(np.full(int(completed.sum()), ro.step), ro.prompt_id[completed],
                                ro.response_len[completed], ro.finished[completed])
        self.records.append(step_record(ro, out, rollout_s, train_s, sync_s, env.now - t_start, E, extra))
        self.outcomes.append((ro.step, t_start, out, ro, origin, gen0))
        self.bar.update(1)

    def _rollout(self, i: int, ro: Any, acc: Any, pred: np.ndarray, gen0: Any, target: int | None):
        """The step's rollout phase (a SimPy sub-process); returns (StepOutcome, each engine's end)."""
        sim, env, cfg, policy = self.sim, self.env, self.sim.config, self.policy
        E, d = cfg.cluster.engines, cfg.cluster.dispatch
        policy.reset(E)
        k0 = time.perf_counter()
        engine_of = queue = None
        if d in STATIC_DISPATCH:
            work = pred if gen0 is None else np.maximum(pred - gen0, 1.0)
            engine_of, queue = dispatch(work, E, d, step=i, long_engines=cfg.cluster.long_engines,
                                        long_frac=cfg.cluster.param("long_frac"))
        kern = StepKernel(ro, acc, engine_of, queue, pred, sim.spec, sim.profile, policy, step=ro.step,
                          rid_base=self.rid_base, max_len=sim.max_len, fast=sim.fast)
        self.rid_base += ro.n
        driver = EngineDriver(env, kern)
        if target is not None and target < ro.n:
            run_to_target(kern, target, driver.t_min)  # a static step, stopped at its target
        if d in ("queue", "rollpacker"):
            driver.feeder = QueueFeeder(driver, queue_order(pred, cfg.cluster.param("queue_order")))
            driver.feeder.fill()
        elif d == "seer":
            chunks = seer_chunks(ro.prompt_id, pred, sim.chunk)
            driver.feeder = SeerFeeder(env, driver, chunks, cfg.cluster.param("interval_s"))
            driver.feeder.schedule()  # the scheduler's first round, at the step's start
            env.process(driver.feeder.ticks())
        self.kernel_wall += time.perf_counter() - k0
        yield env.all_of(driver.start())
        k0 = time.perf_counter()
        out = kern.finalize()
        self.kernel_wall += time.perf_counter() - k0 + driver.kernel_wall
        return out, driver.done_at

    # --- RollPacker's rounds --------------------------------------------------------------------------
    def _rollpacker(self):
        sim, cfg = self.sim, self.sim.config
        threshold = cfg.cluster.param("long_threshold") * sim.max_len
        long_round = cfg.cluster.long_round or sim.steps[0].n
        waiting: list[tuple[int, np.ndarray]] = []
        r = 0
        for i, ro in enumerate(sim.steps):
            pred = np.asarray(self.history.predict(ro.prompt_id, r), np.float64)
            long = np.isfinite(pred) & (pred > threshold)
            if long.any():
                waiting.append((i, np.flatnonzero(long)))
            if (~long).any():
                yield from self._round(r, [(i, np.flatnonzero(~long))])
                r += 1
            if sum(rows.shape[0] for _, rows in waiting) >= long_round:
                yield from self._round(r, waiting)
                waiting, r = [], r + 1
        if waiting:
            yield from self._round(r, waiting)

    def _round(self, r: int, parts: list[tuple[int, np.ndarray]]):
        sim = self.sim
        if len(parts) == 1 and parts[0][1].shape[0] == sim.steps[parts[0][0]].n:
            i = parts[0][0]
            ro, acc = sim.steps[i], sim.acceptance(i)
            if ro.step != r:
                ro, acc = concat([(ro, acc, parts[0][1])], r)
        else:
            ro, acc = concat([(sim.steps[i], sim.acceptance(i), rows) for i, rows in parts], r)
        yield from self._step(r, ro, acc, None, None, None)
