"""The vectorized engine kernel: every engine's decode iterations, advanced together.

Between cluster events engines do not interact, so one kernel iteration runs the next iteration
of EVERY advancing engine at once; each engine keeps its own simulated clock. Per-request state
lives in one int64 matrix (one row per field, one column per active request, columns grouped by
engine in contiguous segments) so that compaction and admission are one fancy index for all
fields at once. The hot path is a few dozen numpy calls per kernel iteration whatever the number
of engines; finishing, admission (continuous batching with max batch + KV budget, prefill on
admission) and KV preemption run in a slower path (simulator/_admission.py) only on iterations
where they happen.

:meth:`StepKernel.advance` runs some engines until each reaches its next *cluster event*: a
finish on an engine the cluster watches (``events``: it refills it from a central queue, counts
completions, ...), its time limit (``until``: it starts no iteration at or after it; the one in
flight completes), or the end of its work. A static step is one advance of every engine to the end
(:meth:`run`); the cluster (simulator/_cluster.py) interleaves advances with its own decisions.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from specroll.calibration import IterationBatch
from specroll.policies import Feedback, Policy, PolicyState, update_accept_ema
from specroll.simulator._acceptance import StepAcceptance, StepRollouts
from specroll.simulator._admission import KernelSlots
from specroll.simulator._step import (
    _NROWS,
    CTX,
    EMA,
    ENG,
    GEN,
    GID,
    LASTACC,
    LASTK,
    LEN,
    PLEN,
    POS,
    PRED,
    EngineSpec,
    StepOutcome,
    Timeline,
    accepted_total,
    tree_pairs,
)
from specroll.simulator._window import has_fast_path, run_windowed
from specroll.simulator._windowparts import Grid


class StepKernel(KernelSlots):
    """Runs one RL step's rollouts (or an asynchronous run's) on the engines; see the module
    docstring."""

    def __init__(self, ro: StepRollouts, acc: StepAcceptance, engine_of: np.ndarray | None,
                 queue: np.ndarray | None, predicted: np.ndarray, spec: EngineSpec, cost: Any,
                 policy: Policy, *, step: int, rid_base: int, max_len: int, timeline_points: int = 2000,
                 fast: bool = True, stop_at: float | None = None) -> None:
        self.ro, self.acc, self.spec, self.cost, self.policy = ro, acc, spec, cost, policy
        policy.bind_cost(cost)  # mdp, pearl: decisions priced by the profile that prices the run
        # A stop time: engines start no iteration and admit nothing once their clock reaches it; what
        # is unfinished then keeps its progress (out.progress). See run().
        self.stop_at = stop_at
        # The windowed path (simulator/_window.py) for policies that declare decision horizons;
        # fast=False forces the iteration-by-iteration loop below (the reference it is tested on).
        self.fast = fast and has_fast_path(policy)
        self.step, self.rid_base, self.max_len = step, rid_base, max_len
        E = spec.n_engines
        R = ro.n
        # Static per-engine admission queues: `queue` lists rollouts grouped by engine, in order.
        # None: no static queues, the cluster admits every rollout (dynamic dispatch; engine -1 until then).
        self.engine_of = (np.full(R, -1, np.int64) if engine_of is None else engine_of.astype(np.int64))
        self.predicted = predicted.astype(np.float64)
        self.queue = np.empty(0, np.int64) if queue is None else queue.astype(np.int64)
        counts = (np.zeros(E, np.int64) if queue is None else np.bincount(self.engine_of, minlength=E))
        self.qptr = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.qend = self.qptr + counts
        # KV tokens a request holds at admission: its prompt, plus what it already generated when it
        # starts past token 0 (SPEC-RL's reused prefix, a resumed partial rollout).
        self.kv0 = (ro.prompt_len if acc.start_gen is None
                    else ro.prompt_len + acc.start_gen - 1).astype(np.int64)
        self.requeued: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(E)]
        self.n_requeued = 0
        # engine iteration count at admission, minus iterations run before a preemption
        self.start_iter = np.zeros(R, np.int64)
        self.cnt = np.zeros(E, np.int64)
        self.clock = np.zeros(E)
        self.iters = np.zeros(E, np.int64)
        self.prefill_s = np.zeros(E)
        # The windowed path keeps no per-iteration feedback (LASTK, LASTACC, EMA): the rows it
        # leaves out are less to copy at every finish and admission.
        self.S = np.empty((LASTK if self.fast else _NROWS, 0), np.int64)
        self.F = np.empty((EMA if self.fast else 2, 0), np.float64)
        self.out = StepOutcome(
            engine=self.engine_of.astype(np.int32), start_s=np.full(R, np.nan), end_s=np.full(R, np.nan),
            iterations=np.zeros(R, np.int64), preemptions=np.zeros(R, np.int32),
            engine_busy_s=self.clock, engine_iterations=self.iters, engine_prefill_s=self.prefill_s,
            progress=np.full(R, -1, np.int64))
        max_resp = int(ro.response_len.max()) if R else 1
        self.timeline = Timeline(-(-max_resp // max(1, timeline_points)))
        self.grid = Grid(E, self.timeline.every)  # the windowed path's timeline samples
        # What the cluster sets between advances (see advance()), and what engines report back.
        self.until = np.full(E, np.inf)
        self.events = np.zeros(E, bool)
        self.fed = np.zeros(E, bool)  # engines the cluster admits for (no refill of their own)
        self.hit = np.zeros(E, bool)  # a watched engine finished a request in the last advance
        self.admit_past_until = True
        self.idle_s = np.zeros(E)  # clock jumps over idle time (the cluster's wake())
        self.sync_s = np.zeros(E)  # weight loads
        self.completed: list[np.ndarray] = []
        self.PS = self.PF = self.pcnt = None  # parked engines' columns (see park())
        # Running totals and loop state that survive from one advance to the next.
        self.last_t = np.zeros(E)
        self.gain = 0.5  # the windowed path's accepted per drafted token (steers W only)
        self.n_drafted = self.n_req_iters = self.n_lossy = self.it = self.prev_ksum = 0
        self.started = False

    # --- checkpoints (partial rollouts' stop: simulator/_partial.py) ------------------------------------
    _STATE = ("S", "F", "requeued", "n_requeued", "start_iter", "cnt", "clock", "iters", "prefill_s", "qptr",
              "out", "timeline", "grid", "last_t", "gain", "n_drafted", "n_req_iters", "n_lossy", "it",
              "prev_ksum", "completed", "idle_s", "sync_s", "started")

    def snapshot(self) -> dict[str, Any]:
        """A copy of everything an advance changes (between advances: nothing parked), the policy's
        own state included (bandits, feedback controllers)."""
        state = copy.deepcopy({k: getattr(self, k) for k in self._STATE})
        state["policy"] = {k: copy.deepcopy(v) for k, v in vars(self.policy).items() if v is not self.cost}
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Back to a :meth:`snapshot` (copied again: it can be restored twice)."""
        state = copy.deepcopy(state)
        vars(self.policy).update(state.pop("policy"))
        for k, v in state.items():
            setattr(self, k, v)
        self._segments()

    # --- driving the kernel -------------------------------------------------------------------------
    def start(self) -> None:
        """Admit from the static queues at time 0 (once)."""
        if not self.started:
            self.started = True
            self._admit(np.arange(self.spec.n_engines))

    def run(self) -> StepOutcome:
        """A whole step: advance every engine until all its rollouts have finished (or, with a stop
        time, until it reaches it), then the outcome."""
        self.start()
        if self.stop_at is not None:
            self.until[:] = self.stop_at
            self.admit_past_until = False
        self.advance()
        if self.stop_at is not None:
            self.stop_unfinished()
        return self.finalize()

    def advance(self, engines: np.ndarray | None = None) -> None:
        """Run the engines of mask ``engines`` (default: all) until each has finished a request while
        watched (``events``; then ``hit``), reached ``until`` or run out of work. The others are
        parked meanwhile. Everything is exactly as if each engine ran alone to that point."""
        self.start()
        self.hit[:] = False
        if engines is not None and not engines.all():
            self.park(~engines)
        try:
            if self.fast:
                run_windowed(self)
            else:
                self._loop()
        finally:
            self.unpark()

    def _stopping(self) -> None:
        """Park the engines that must not start another iteration: past their time limit, or watched
        and just finished a request."""
        stop = ((self.clock >= self.until) | self.hit) & (self.cnt > 0)
        if stop.any():
            self.park(stop)

    def _loop(self) -> None:
        """The iteration-by-iteration kernel (policies without decision horizons; the windowed
        path's reference)."""
        spec, acc, policy, cost = self.spec, self.acc, self.policy, self.cost
        E = spec.n_engines
        match, plen_at, kmax = acc.match, acc.proposal_len, acc.kmax
        cap = float(spec.kv_capacity)
        tree_w, lossy = acc.tree_width, acc.lossy
        tri = tree_pairs(kmax, tree_w)
        tl = self.timeline
        it, drafted, req_iters, prev_ksum, lossy_n = (self.it, self.n_drafted, self.n_req_iters,
                                                      self.prev_ksum, self.n_lossy)
        last_t = self.last_t
        self._stopping()
        while self.S.shape[1]:
            S, F, active, seg, n_act = self.S, self.F, self.active, self.seg, self.n_act
            eng, pos, ctx = S[ENG], S[POS], S[CTX]
            n = S.shape[1]
            m = match[pos]
            # Engine-level quantities are computed over active engines only (A <= E), then scattered.
            c_sum = np.add.reduceat(ctx, seg).astype(np.float64)
            kv_used = np.zeros(E)
            kv_used[active] = c_sum / cap
            conf_fn = None
            if acc.has_confidence:
                conf_fn = _conf_thunk(acc, pos)
            state = PolicyState(
                engine=eng, request=S[GID], generated=S[GEN], prompt_len=S[PLEN], predicted_len=F[PRED],
                last_drafted=S[LASTK], last_accepted=S[LASTACC], accept_ema=F[EMA],
                batch_size=self.cnt, kv_used=kv_used, iteration=self.iters, last_iter_time=last_t,
                kmax=kmax, max_len=self.max_len, step=self.step, conf_fn=conf_fn, match_len=m)
            k = np.minimum(policy.decide(state), plen_at[pos] if plen_at is not None else kmax)
            np.maximum(k, 0, out=k)
            draft = np.add.reduceat(k, seg)
            ksum = int(draft.sum())
            c_max = np.maximum.reduceat(ctx, seg).astype(np.float64)
            if ksum:
                a = np.minimum(k, m)
                # A tree of tree_w branches of depth k verifies tree_w * k nodes (chains: k).
                kq = k if tree_w == 1 else k * tree_w
                qc = (kq + 1) * ctx
                qc += tri[k]
                draft = (draft if tree_w == 1 else draft * tree_w).astype(np.float64)
                if lossy is not None:
                    lossy_n += lossy.count(pos, a)
                batch = IterationBatch(
                    n=n_act, q_sum=n_act + draft, q_max=np.maximum.reduceat(kq, seg) + 1.0,
                    c_sum=c_sum, c_max=c_max, qc_sum=np.add.reduceat(qc, seg).astype(np.float64),
                    draft_tokens=draft)
            else:
                a = k  # all zeros
                batch = IterationBatch(n=n_act, q_sum=n_act, q_max=np.ones_like(n_act), c_sum=c_sum,
                                       c_max=c_max, qc_sum=c_sum + n_act, draft_tokens=np.zeros_like(n_act))
            t_act = cost.iteration_time(batch)
            t = np.zeros(E)
            t[active] = t_act
            if it % tl.every == 0:
                tl.add(it, self.clock, self.cnt, t)
            self.clock += t
            self.iters += self.act_mask
            drafted += ksum * tree_w
            req_iters += n
            it += 1
            policy.observe(state, Feedback(k=k, accepted=a, iter_time=t))
            if self.PS is None:
                last_t = t
            else:  # parked engines keep theirs
                last_t = last_t.copy()
                last_t[active] = t_act
            S[GEN:CTX + 1] += a + 1
            if ksum:
                S[LASTK] = k
                S[LASTACC] = a
                F[EMA] = update_accept_ema(F[EMA], k, a)
            elif prev_ksum:
                S[LASTK] = 0
                S[LASTACC] = 0
            prev_ksum = ksum
            done = S[GEN] >= S[LEN]
            if done.any():
                self._finish(done)
            # KV grows by at most the verified tokens: only then look for engines to preempt.
            if (c_sum + batch.q_sum).max() > cap and self.S.shape[1]:
                kv = np.bincount(self.S[ENG], weights=self.S[CTX], minlength=E)
                if (kv > cap).any():
                    self._preempt(kv)
            self._stopping()
        self.it, self.n_drafted, self.n_req_iters, self.prev_ksum, self.n_lossy = (
            it, drafted, req_iters, prev_ksum, lossy_n)
        self.last_t = last_t

    def finalize(self) -> StepOutcome:
        """The step's outcome once the engines are done (or stopped)."""
        out, E = self.out, self.spec.n_engines
        out.lossy += self.n_lossy
        out.drafted = self.n_drafted + out.drafted
        out.accepted = accepted_total(self.ro, self.n_req_iters)
        out.request_iterations = self.n_req_iters
        out.kernel_iterations = int(self.iters.max()) if E else 0
        if self.idle_s.any():  # engines the cluster woke from idle: their clocks jumped over it
            out.engine_busy_s = self.clock - self.idle_s
        if self.fast:
            out.timeline = self.grid.arrays(self.iters, self.clock)
        else:
            self.timeline.add(self.it, self.clock, self.cnt, np.zeros(E))
            out.timeline = self.timeline.arrays(E)
        return out


def _conf_thunk(acc: StepAcceptance, pos: np.ndarray):
    """A PolicyState.conf_fn bound to this iteration's positions (gathered only if read)."""
    frozen = pos.copy()
    return lambda: acc.conf_at(frozen)
