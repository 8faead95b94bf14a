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

from simulator._acceptance import StepAcceptance, make_acceptance
from simulator._config import SimConfig
from simulator._kernel import EngineSpec, StepKernel, StepOutcome
from simulator._result import SimResult
from simulator._workload import dispatch, load_trace, split_steps
from specroll.errors import SpecrollError
from specroll.progress import progress


def _length_history(window: int):
    import policies

    cls = getattr(policies, "LengthHistory", None)
    return None if cls is None else cls(window=window)


class Simulator:
    """A config loaded once (trace, profile, acceptance draws): run it under many policies."""

    def __init__(self, config: SimConfig, *, profile: Any = None, trace: Any = None,
                 fast: bool = True) -> None:
        self.config = config
        # False: every step runs the iteration-by-iteration kernel (the reference the windowed
        # fast path is tested against); results are the same bit for bit either way.
        self.fast = fast
        if profile is None:
            from calibration import load_profile

            try:
                profile = load_profile(config.profile_name(), expect_model=config.model.name)
            except SpecrollError as exc:
                raise SpecrollError(f"profile '{config.profile_name()}': {exc.what}", file=config.file,
                                    field="model.profile", fix=exc.fix) from None
        self.profile = profile
        self.trace = load_trace(config) if trace is None else trace
        self.steps = split_steps(self.trace, config)
        self.max_len = int(self.trace.max_response_len)
        self.source = make_acceptance(config.acceptance.source, config.acceptance.params, file=config.file)
        self._acc: dict[int, StepAcceptance] = {}
        self.acceptance_wall_s = 0.0
        cap = config.cluster.kv_capacity_tokens or int(profile.kv_capacity_tokens)
        if cap < 1:
            raise SpecrollError(f"the profile leaves no KV-cache memory ({cap} tokens per engine)",
                                file=config.file, field="model.profile",
                                fix="use more tensor parallelism, a bigger device or a smaller model")
        self.spec = EngineSpec(config.cluster.engines, config.cluster.max_batch, cap,
                               config.cluster.kv_watermark)

    def acceptance(self, i: int) -> StepAcceptance:
        if i not in self._acc:
            t0 = time.perf_counter()
            try:
                self._acc[i] = self.source.prepare(self.steps[i], self.config.seed)
            except SpecrollError as exc:
                raise SpecrollError(exc.what, file=self.config.file, field=exc.field, fix=exc.fix) from None
            self.acceptance_wall_s += time.perf_counter() - t0
        return self._acc[i]

    # --- training phase ---------------------------------------------------------------------------
    def train_time(self, tokens: int) -> tuple[float, float]:
        """(train_s, sync_s) of one RL step over ``tokens`` prompt + response tokens."""
        tc = self.config.train
        if not tc.enabled:
            return 0.0, 0.0
        from calibration import get_shape

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
        history = _length_history(cfg.workload.history_window)
        env = simpy.Environment()
        E = cfg.cluster.engines
        records: list[dict[str, Any]] = []
        outcomes: list[tuple[int, float, StepOutcome]] = []
        wall0 = time.perf_counter()
        acc_wall0 = self.acceptance_wall_s
        kernel_wall = [0.0]
        bar = progress(total=len(self.steps) if show_progress else 0, desc=f"simulate {policy.name}",
                       unit="step")
        rid_base = [0]

        def engine_proc(busy_s: float):
            yield env.timeout(busy_s)

        def rl_loop():
            for i, ro in enumerate(self.steps):
                t_start = env.now
                acc = self.acceptance(i)
                pred = (history.predict(ro.prompt_id, ro.step) if history is not None
                        else np.full(ro.n, np.nan))
                pred = np.asarray(pred, dtype=np.float64)
                engine_of, queue = dispatch(pred, E, cfg.cluster.dispatch)
                policy.reset(E)
                k0 = time.perf_counter()
                out = StepKernel(ro, acc, engine_of, queue, pred, self.spec, self.profile, policy,
                                 step=ro.step, rid_base=rid_base[0], max_len=self.max_len,
                                 fast=self.fast).run()
                kernel_wall[0] += time.perf_counter() - k0
                rid_base[0] += ro.n
                # The barrier: the step's training starts when its last engine is done.
                ends = out.engine_busy_s
                yield env.all_of([env.process(engine_proc(float(b))) for b in ends[ends > 0]] or
                                 [env.timeout(0)])
                rollout_s = env.now - t_start
                tokens = int(ro.response_len.sum() + ro.prompt_len.sum())
                train_s, sync_s = self.train_time(tokens)
                yield env.timeout(train_s)
                yield env.timeout(sync_s)
                if history is not None:
                    history.record(np.full(ro.n, ro.step), ro.prompt_id, ro.response_len, ro.finished)
                records.append(_step_record(ro, out, rollout_s, train_s, sync_s, env.now - t_start, E))
                outcomes.append((ro.step, t_start, out))
                bar.update(1)

        env.process(rl_loop())
        env.run()
        bar.close()
        wall = time.perf_counter() - wall0
        acc_wall = self.acceptance_wall_s - acc_wall0
        summary = self._summary(policy, records, float(env.now), wall, acc_wall, kernel_wall[0])
        return SimResult(summary=summary, requests=_requests_table(self.steps, outcomes),
                         engines=_engines_table(outcomes))

    def _summary(self, policy: Any, records: list[dict[str, Any]], makespan: float, wall: float,
                 acc_wall: float, kernel_wall: float) -> dict[str, Any]:
        cfg = self.config

        def tot(key: str) -> Any:
            return sum(r[key] for r in records)

        tokens, req_iters = tot("tokens"), tot("request_iterations")
        busy = tot("engine_busy_s")
        rollout = tot("rollout_s")
        acc = self.steps and self._acc.get(0)
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
            "kmax": int(acc.kmax) if acc else None,
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
            "steps": records,
            "wall_s": wall,
            "acceptance_wall_s": acc_wall,
            "kernel_wall_s": kernel_wall,
            "tokens_per_wall_s": tokens / max(wall, 1e-9),
        }


def _step_record(ro, out: StepOutcome, rollout_s: float, train_s: float, sync_s: float, step_s: float,
                 n_engines: int) -> dict[str, Any]:
    tokens = int(ro.response_len.sum())
    busy = float(out.engine_busy_s.sum())
    return {
        "step": ro.step,
        "rollouts": ro.n,
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
        "accepted_tokens": out.accepted,
        "wasted_draft_tokens": out.drafted - out.accepted,
        "preemptions": int(out.preemptions.sum()),
        "prefill_s": float(out.engine_prefill_s.sum()),
        "engine_busy_s": busy,
        "gpu_busy_fraction": busy / max(rollout_s * n_engines, 1e-300),
        "p50_end_s": float(np.median(out.end_s)),
    }


def _requests_table(steps, outcomes) -> dict[str, np.ndarray]:
    parts = []
    for ro, (step, t0, out) in zip(steps, outcomes):
        parts.append({
            "step": np.full(ro.n, step, np.int32), "prompt_id": ro.prompt_id,
            "sample": ro.sample.astype(np.int32),
            "engine": out.engine, "response_len": ro.response_len.astype(np.int32),
            "start_s": t0 + out.start_s, "end_s": t0 + out.end_s, "iterations": out.iterations,
            "preemptions": out.preemptions})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def _engines_table(outcomes) -> dict[str, np.ndarray]:
    parts = []
    for step, t0, out in outcomes:
        tl = out.timeline
        if not tl:
            continue
        parts.append({"step": np.full(tl["engine"].shape[0], step, np.int32), **tl,
                      "time_s": t0 + tl["time_s"]})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def simulate(config: SimConfig, policy: Any = None, *, show_progress: bool = True) -> SimResult:
    """Simulate ``config`` (under ``policy`` if given, else the config's policy)."""
    return Simulator(config).run(policy, show_progress=show_progress)


def simulate_policies(config: SimConfig, policies: Iterable[Any], *, show_progress: bool = True
                      ) -> list[SimResult]:
    """Run several policies on one config: same trace, profile and acceptance draws for each."""
    sim = Simulator(config)
    return [sim.run(p, show_progress=show_progress) for p in policies]
