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
from specroll.simulator._async import AsyncLoop
from specroll.simulator._config import SimConfig
from specroll.simulator._records import engines_table, requests_table, training_table
from specroll.simulator._result import SimResult, SimSummary
from specroll.simulator._step import EngineSpec
from specroll.simulator._sync import SyncLoop
from specroll.simulator._workload import load_trace, split_steps


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
        self.chunk = self._seer_chunk()

    @property
    def group(self) -> int:
        """The largest group (samples of one prompt in one step) of the workload."""
        return max(int(np.unique(ro.prompt_id, return_counts=True)[1].max()) for ro in self.steps)

    def set_dispatch(self, params: Any) -> None:
        """Run the same workload under other dispatch parameters (a dict of [cluster] keys, or a
        whole ClusterConfig): the tuner's objective when it searches them."""
        cl = params if not isinstance(params, dict) else self.config.cluster.model_copy(update=params)
        self.config = self.config.replace(cluster=cl)
        self.chunk = self._seer_chunk()

    def _seer_chunk(self) -> int | None:
        """Seer's chunk: samples of a group dispatched together (checked against the groups)."""
        cl = self.config.cluster
        if cl.dispatch != "seer":
            return None
        group = self.group
        if cl.chunk is not None and cl.chunk > group:
            raise SpecrollError(f"a chunk of {cl.chunk} samples is larger than the workload's groups "
                                f"({group} samples per prompt)", file=self.config.file, field="cluster.chunk",
                                fix=f"set cluster.chunk between 1 and {group}")
        return cl.chunk or max(1, group // 4)

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
        if self.per_run:
            self.source.start_run()
        wall0 = time.perf_counter()
        acc_wall0 = self.acceptance_wall_s
        bar = progress(total=len(self.steps) if show_progress else 0, desc=f"simulate {policy.name}",
                       unit="step")
        loop = (AsyncLoop if cfg.rl.mode == "async" else SyncLoop)(self, env, policy, history, bar)
        # Until the RL loop ends (a superseded flush timer may lie later: it does nothing).
        env.run(until=env.process(loop.run()))
        bar.close()
        if isinstance(loop, AsyncLoop):
            records, extra, tables = loop.report()
            outcomes, training, makespan = [(0, 0.0, loop.out, loop.ro, None, None)], [], loop.end_s
        else:
            records, extra, tables = loop.records, {}, {}
            outcomes, training, makespan = loop.outcomes, loop.training, float(env.now)
        wall = time.perf_counter() - wall0
        acc_wall = self.acceptance_wall_s - acc_wall0
        summary = self._summary(policy, records, makespan, wall, acc_wall, loop.kernel_wall)
        summary.update(extra)
        if "rl" in extra:
            summary["off_policy_fraction"] = extra["off_policy_tokens"] / max(extra["completed_tokens"], 1)
        requests = requests_table(outcomes)
        requests.update(tables.get("requests_extra", {}))
        return SimResult(summary=SimSummary(**summary),
                         columns={"requests": requests, "engines": engines_table(outcomes),
                                  "drafter_training": training_table(training, records),
                                  "versions": tables.get("versions", {})})

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


def simulate(config: SimConfig, policy: Any = None, *, show_progress: bool = True) -> SimResult:
    """Simulate ``config`` (under ``policy`` if given, else the config's policy)."""
    return Simulator(config).run(policy, show_progress=show_progress)


def simulate_policies(config: SimConfig, policies: Iterable[Any], *, show_progress: bool = True
                      ) -> list[SimResult]:
    """Run several policies on one config: same trace, profile and acceptance draws for each."""
    sim = Simulator(config)
    return [sim.run(p, show_progress=show_progress) for p in policies]
