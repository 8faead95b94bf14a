"""simulate(config) -> SimResult: the cluster-level discrete-event simulation of RL steps.

SimPy schedules the cluster events of each RL step: dispatch of the step's rollouts to the
engines, each engine's rollout phase (advanced by the vectorized kernel: engines do not interact
until the barrier), the synchronous barrier (the step waits for its last rollout), the training
phase (FLOPs of the policy update) and the weight sync. A :class:`Simulator` loads the trace and
profile once and caches each step's acceptance realization, so several policies run on the same
config face the same draws (common random numbers) and pay for them once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.core.progress import progress
from specroll.policies import LengthHistory
from specroll.simulator._acceptance import StepAcceptance
from specroll.simulator._config import SimConfig
from specroll.simulator._kernel import StepKernel
from specroll.simulator._partial import FreshQueue, carry_over, merge_step
from specroll.simulator._result import SimResult, SimSummary
from specroll.simulator._step import EngineSpec, StepOutcome
from specroll.simulator._workload import dispatch, load_trace, split_steps


class Simulator:
    """A config loaded once (trace, profile, acceptance draws): run it under many policies."""

    def __init__(self, config: SimConfig, *, profile: Any = None, trace: Any = None,
                 fast: bool = True) -> None:
        self.config = config
        # False: every step runs the iteration-by-iteration kernel (the reference the windowed
        # fast path is tested against); results are the same bit for bit either way.
        self.fast = fast
        if profile is None:
            profile = config.load_profile()  # with the [drafter] table's drafter cost, if any
        elif config.drafter is not None:
            profile = profile.with_drafter(config.drafter, file=config.file)
        self.profile = profile
        self.trace = load_trace(config) if trace is None else trace
        self.steps = split_steps(self.trace, config)
        self.max_len = int(self.trace.max_response_len)
        self.source = config.make_acceptance()
        # A per-run source (the adaptive drafter) depends on the run's own earlier steps: its steps
        # are drawn afresh in every run, never cached across runs.
        self.per_run = bool(getattr(self.source, "per_run", False))
        self._acc: dict[int, StepAcceptance] = {}
        self.acceptance_wall_s = 0.0
        cap = config.cluster.kv_capacity_tokens or int(profile.kv_capacity_tokens)
        if cap < 1:
            raise SpecrollError(f"the profile leaves no KV-cache memory ({cap} tokens per engine)",
                                file=config.file, field="model.profile",
                                fix="use more tensor parallelism, a bigger device or a smaller model")
        max_batch = config.cluster.max_batch
        pa = config.partial
        if pa.enabled and pa.concurrency is not None:  # a fixed number of rollouts in flight
            max_batch = max(1, min(max_batch, -(-pa.concurrency // config.cluster.engines)))
        self.spec = EngineSpec(config.cluster.engines, max_batch, cap, config.cluster.kv_watermark)

    def acceptance(self, i: int) -> StepAcceptance:
        if i not in self._acc:
            t0 = time.perf_counter()
            try:
                acc = self.source.prepare(self.steps[i], self.config.seed)
            except SpecrollError as exc:
                raise SpecrollError(exc.what, file=self.config.file, field=exc.field, fix=exc.fix) from None
            self.acceptance_wall_s += time.perf_counter() - t0
            if self.per_run:
                return acc
            self._acc[i] = acc
        return self._acc[i]

    @property
    def kmax(self) -> int | None:
        """The largest draft this simulation can express: the drafter's (or the acceptance model's)
        proposal cap. The tuner clips draft-length search bounds to it."""
        return int(self.acceptance(0).kmax) if self.steps else None

    # --- training phase ---------------------------------------------------------------------------
    def train_time(self, tokens: int) -> tuple[float, float]:
        """(train_s, sync_s) of one RL step over ``tokens`` prompt + response tokens."""
        tc = self.config.train
        if not tc.enabled:
            return 0.0, 0.0
        from specroll.calibration import get_shape

        shape = get_shape(tc.model or self.config.model.name)
        gpus = tc.gpus or self.config.cluster.engines * self.config.cluster.tp
        peak = tc.peak_flops or float(self.profile.device.peak_flops)
        train_s = tc.passes * shape.n_params * tokens / (gpus * peak * tc.mfu)
        sync_s = shape.weight_bytes(2.0) / (tc.sync_gbps * 1e9)
        return float(train_s), float(sync_s)

    # --- one run ------------------------------------------------------------------------------------
    def run(self, policy: Any = None, *, show_progress: bool = True) -> SimResult:
        """Simulate every step under ``policy`` (default: the config's)."""
        import simpy

        cfg = self.config
        policy = cfg.make_policy() if policy is None else policy
        history = LengthHistory(window=cfg.workload.history_window)
        env = simpy.Environment()
        E = cfg.cluster.engines
        partial = cfg.partial.enabled
        train_drafter = self.per_run  # the adaptive drafter: it trains on idle engines
        if self.per_run:
            self.source.start_run()
        records: list[dict[str, Any]] = []
        outcomes: list[tuple[int, float, StepOutcome, Any]] = []
        training: list[tuple[int, int, float, float]] = []
        wall0 = time.perf_counter()
        acc_wall0 = self.acceptance_wall_s
        kernel_wall = [0.0]
        bar = progress(total=len(self.steps) if show_progress else 0, desc=f"simulate {policy.name}",
                       unit="step")
        rid_base = [0]
        carry = [None]
        fresh = FreshQueue([ro.n for ro in self.steps]) if partial else None

        def kernel(ro, acc, engine_of, queue, pred, fast, stop_at=None) -> StepOutcome:
            policy.reset(E)
            k0 = time.perf_counter()
            out = StepKernel(ro, acc, engine_of, queue, pred, self.spec, self.profile, policy, step=ro.step,
                             rid_base=rid_base[0], max_len=self.max_len, fast=fast, stop_at=stop_at).run()
            kernel_wall[0] += time.perf_counter() - k0
            return out

        def engine_proc(e: int, busy_s: float, done, barrier, t0: float):
            yield env.timeout(busy_s)
            done.succeed()
            if train_drafter:  # TLT: the engine trains the drafter until the step's barrier
                start = env.now
                yield barrier
                if env.now > start:
                    training.append((len(records), e, start - t0, env.now - t0))

        def rl_loop():
            for i, ro_new in enumerate(self.steps):
                t_start = env.now
                if partial:
                    # The pool: carried rollouts, then fresh ones up to the step's batch plus the
                    # concurrency (rollouts start as others finish until `target` are done).
                    have = 0 if carry[0] is None else carry[0].n
                    extra = self.spec.max_batch * E
                    chunks = fresh.take(max(ro_new.n + extra - have, 0))
                    parts = [(self.steps[j], self.acceptance(j), rows) for j, rows in chunks]
                    ro, acc, gen0, origin = merge_step(carry[0], parts, ro_new.step)
                else:
                    ro, acc, gen0, origin = ro_new, self.acceptance(i), None, None
                pred = np.asarray(history.predict(ro.prompt_id, ro.step), dtype=np.float64)
                work = pred if gen0 is None else np.maximum(pred - gen0, 1.0)
                engine_of, queue = dispatch(work, E, cfg.cluster.dispatch, step=i,
                                            long_engines=cfg.cluster.long_engines,
                                            long_frac=cfg.cluster.long_frac)
                out = kernel(ro, acc, engine_of, queue, pred, self.fast)
                if partial:
                    target = min(cfg.partial.target or ro_new.n, ro.n)
                    if target < ro.n:
                        # The step stops at its target-th completion: find that time on the full run,
                        # then run again up to it (the iteration loop, which can stop at a time).
                        stop_at = float(np.sort(out.end_s)[target - 1])
                        out = kernel(ro, acc, engine_of, queue, pred, False, stop_at)
                rid_base[0] += ro.n
                # The barrier: the step's training starts when its last engine is done.
                done = [env.event() for _ in range(E)]
                barrier = env.all_of(done)
                for e, b in enumerate(out.engine_busy_s.tolist()):
                    env.process(engine_proc(e, b, done[e], barrier, t_start))
                yield barrier
                rollout_s = env.now - t_start
                completed = np.isfinite(out.end_s)
                tokens = int(ro.response_len[completed].sum() + ro.prompt_len[completed].sum())
                train_s, sync_s = self.train_time(tokens)
                extra: dict[str, Any] = {}
                if train_drafter:
                    idle = float((rollout_s - out.engine_busy_s).sum())
                    extra = {"drafter_train_s": idle, **self.source.end_step(idle)}
                if partial:
                    extra.update(_partial_stats(ro, out, gen0, completed))
                    carry[0] = carry_over(ro, acc, origin, gen0, completed, out.progress)
                    extra["carried_over"] = 0 if carry[0] is None else carry[0].n
                yield env.timeout(train_s)
                yield env.timeout(sync_s)
                history.record(np.full(int(completed.sum()), ro.step), ro.prompt_id[completed],
                               ro.response_len[completed], ro.finished[completed])
                records.append(_step_record(ro, out, rollout_s, train_s, sync_s, env.now - t_start, E, extra))
                outcomes.append((ro.step, t_start, out, ro, origin, gen0))
                bar.update(1)

        env.process(rl_loop())
        env.run()
        bar.close()
        wall = time.perf_counter() - wall0
        acc_wall = self.acceptance_wall_s - acc_wall0
        summary = self._summary(policy, records, float(env.now), wall, acc_wall, kernel_wall[0])
        return SimResult(summary=SimSummary(**summary),
                         columns={"requests": _requests_table(outcomes), "engines": _engines_table(outcomes),
                                  "drafter_training": _training_table(training, records)})

    def _summary(self, policy: Any, records: list[dict[str, Any]], makespan: float, wall: float,
                 acc_wall: float, kernel_wall: float) -> dict[str, Any]:
        cfg = self.config

        def tot(key: str) -> Any:
            return sum(r[key] for r in records)

        tokens, req_iters = tot("tokens"), tot("request_iterations")
        busy = tot("engine_busy_s")
        rollout = tot("rollout_s")
        acc = self.steps and self._acc.get(0)
        kmax = int(acc.kmax) if acc else getattr(self.source, "kmax", None)
        extra: dict[str, Any] = {}
        if cfg.drafter is not None:
            extra["drafter"] = dict(cfg.drafter)
        if cfg.lossy.method is not None:
            extra["lossy_method"] = {"method": cfg.lossy.method, **cfg.lossy.params}
        if cfg.partial.enabled:
            done_tokens = tot("completed_tokens")
            extra.update({"partial": {"concurrency": cfg.partial.concurrency, "target": cfg.partial.target,
                                      "max_batch": self.spec.max_batch},
                          "completed_rollouts": tot("completed_rollouts"), "completed_tokens": done_tokens,
                          "off_policy_tokens": tot("off_policy_tokens"),
                          "unfinished_at_end": records[-1]["carried_over"] if records else 0})
        if records and "drafter_train_s" in records[0]:
            extra["drafter_train_s"] = tot("drafter_train_s")
        return {
            "policy": policy.to_dict(),
            "acceptance": {"source": cfg.acceptance.source, **cfg.acceptance.params},
            "model": cfg.model.name,
            "profile": cfg.profile_name(),
            "engines": cfg.cluster.engines,
            "tp": cfg.cluster.tp,
            "max_batch": cfg.cluster.max_batch,
            "dispatch": cfg.cluster.dispatch,
            "kv_capacity_tokens": self.spec.kv_capacity,
            "kmax": kmax,
            "seed": cfg.seed,
            "makespan_s": makespan,
            "rollout_s": rollout,
            "train_s": tot("train_s"),
            "sync_s": tot("sync_s"),
            "tokens": tokens,
            "rollouts": tot("rollouts"),
            "iterations": tot("iterations"),
            "kernel_iterations": tot("kernel_iterations"),
            "request_iterations": req_iters,
            "mean_accepted_per_iteration": tot("accepted_tokens") / max(req_iters, 1),
            "tokens_per_request_iteration": tokens / max(req_iters, 1),
            "drafted_tokens": tot("drafted_tokens"),
            "accepted_tokens": tot("accepted_tokens"),
            "wasted_draft_tokens": tot("wasted_draft_tokens"),
            "preemptions": tot("preemptions"),
            "gpu_busy_fraction": busy / max(rollout * cfg.cluster.engines, 1e-300),
            # Lossy acceptance (simulator/_lossy.py): accepted tokens the target alone would not have
            # produced, over all tokens. Partial rollouts: tokens of the completed rollouts generated
            # under older weights, over those rollouts' tokens.
            "lossy": bool(getattr(self.source, "may_be_lossy", False)),
            "lossy_tokens": tot("lossy_tokens"),
            "lossy_fraction": tot("lossy_tokens") / max(tokens, 1),
            "off_policy_fraction": (tot("off_policy_tokens") / max(tot("completed_tokens"), 1)
                                    if cfg.partial.enabled else 0.0),
            **extra,
            "steps": records,
            "wall_s": wall,
            "acceptance_wall_s": acc_wall,
            "kernel_wall_s": kernel_wall,
            "tokens_per_wall_s": tokens / max(wall, 1e-9),
        }


def _step_record(ro, out: StepOutcome, rollout_s: float, train_s: float, sync_s: float, step_s: float,
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


def _partial_stats(ro, out: StepOutcome, gen0: np.ndarray, completed: np.ndarray) -> dict[str, Any]:
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


def _requests_table(outcomes) -> dict[str, np.ndarray]:
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


def _engines_table(outcomes) -> dict[str, np.ndarray]:
    parts = []
    for step, t0, out, *_ in outcomes:
        tl = out.timeline
        if not tl:
            continue
        parts.append({"step": np.full(tl["engine"].shape[0], step, np.int32), **tl,
                      "time_s": t0 + tl["time_s"]})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def _training_table(training: list[tuple[int, int, float, float]], records: list[dict[str, Any]]
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


def simulate(config: SimConfig, policy: Any = None, *, show_progress: bool = True) -> SimResult:
    """Simulate ``config`` (under ``policy`` if given, else the config's policy)."""
    return Simulator(config).run(policy, show_progress=show_progress)


def simulate_policies(config: SimConfig, policies: Iterable[Any], *, show_progress: bool = True
                      ) -> list[SimResult]:
    """Run several policies on one config: same trace, profile and acceptance draws for each."""
    sim = Simulator(config)
    return [sim.run(p, show_progress=show_progress) for p in policies]
