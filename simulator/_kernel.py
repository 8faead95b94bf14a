"""The vectorized engine kernel: every engine's decode iterations of one RL step, advanced together.

Inside an RL step engines do not interact until the barrier, so one kernel iteration runs the
next iteration of EVERY engine at once; each engine keeps its own simulated clock. Per-request
state lives in one int64 matrix (one row per field, one column per active request, columns
grouped by engine in contiguous segments) so that compaction and admission are one fancy index
for all fields at once. The hot path is a few dozen numpy calls per kernel iteration whatever the
number of engines; finishing, admission (continuous batching with max batch + KV budget, prefill
on admission) and KV preemption run in a slower path only on iterations where they happen.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from specroll.calibration import IterationBatch
from specroll.policies import Feedback, Policy, PolicyState, update_accept_ema
from specroll.simulator._acceptance import StepAcceptance, StepRollouts
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


class StepKernel:
    """Runs one RL step's rollouts on all engines; see the module docstring."""

    def __init__(self, ro: StepRollouts, acc: StepAcceptance, engine_of: np.ndarray, queue: np.ndarray,
                 predicted: np.ndarray, spec: EngineSpec, cost: Any, policy: Policy, *, step: int,
                 rid_base: int, max_len: int, timeline_points: int = 2000, fast: bool = True,
                 stop_at: float | None = None) -> None:
        self.ro, self.acc, self.spec, self.cost, self.policy = ro, acc, spec, cost, policy
        policy.bind_cost(cost)  # mdp, pearl: decisions priced by the profile that prices the run
        # Partial rollouts: engines stop starting iterations (and admitting) once their clock reaches
        # stop_at; what is unfinished then is left for the next step. Only the iteration loop does
        # this (the windowed path would have to cut its windows at a time, not at events).
        self.stop_at = stop_at
        # The windowed path (simulator/_window.py) for policies that declare decision horizons;
        # fast=False forces the iteration-by-iteration loop below (the reference it is tested on).
        self.fast = fast and has_fast_path(policy) and stop_at is None
        self.step, self.rid_base, self.max_len = step, rid_base, max_len
        E = spec.n_engines
        R = ro.n
        self.engine_of = engine_of.astype(np.int64)
        self.predicted = predicted.astype(np.float64)
        # Static per-engine admission queues: `queue` lists rollouts grouped by engine, in order.
        self.queue = queue.astype(np.int64)
        counts = np.bincount(self.engine_of, minlength=E)
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

    # --- slow path: admission, finishing, preemption -------------------------------------------
    def _segments(self) -> None:
        """Recompute the engine segments after the request matrix changed shape."""
        self.active = np.flatnonzero(self.cnt > 0)
        self.seg = (np.cumsum(self.cnt) - self.cnt)[self.active]
        self.act_mask = (self.cnt > 0).astype(np.int64)
        self.n_act = self.cnt[self.active].astype(np.float64)
        self.pending = int((self.qend - self.qptr).sum()) + self.n_requeued

    def _new_columns(self, rows: np.ndarray, eng: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ro = self.ro
        S = np.zeros((self.S.shape[0], rows.shape[0]), np.int64)
        S[ENG] = eng
        S[GID] = self.rid_base + rows
        # The prefill forward samples response token 0 (as vLLM and our real engine do): decoding
        # starts at position 1 over the prompt's cached context (token 0 is pending, fed next).
        acc = self.acc
        if acc.start_gen is None:
            S[GEN] = 1
            S[POS] = acc.offsets[rows] + 1
        else:  # tokens 0 .. g-1 exist already (SPEC-RL's reused prefix, a resumed rollout)
            g = acc.start_gen[rows]
            S[GEN] = g
            S[POS] = acc.offsets[rows] + g
        S[CTX] = self.kv0[rows]
        S[LEN] = ro.response_len[rows]
        S[PLEN] = ro.prompt_len[rows]
        F = np.full((self.F.shape[0], rows.shape[0]), np.nan)  # EMA: nan before a first draft
        F[PRED] = self.predicted[rows]
        return S, F

    def _prefill(self, eng: np.ndarray, ctx: np.ndarray) -> None:
        """Charge each admitting engine ``cost.prefill_time`` of its admitted requests' contexts.

        Many engines at once go through the cost model's vectorized ``prefill_times`` when it has
        one (CostProfile: the same numbers). Pricing them with ``iteration_time`` instead, as this
        once did, gave a cost model whose prefill differs from a q = context iteration results
        that depended on how many engines happened to admit in the same iteration.
        """
        engines, idx = np.unique(eng, return_inverse=True)
        vectorized = getattr(self.cost, "prefill_times", None)
        if vectorized is not None:
            t = np.asarray(vectorized(ctx, idx, engines.shape[0]), dtype=np.float64)
        else:
            t = np.array([float(self.cost.prefill_time(ctx[idx == i])) for i in range(engines.shape[0])])
        self.clock[engines] += t
        self.prefill_s[engines] += t

    def _admit(self, engines: np.ndarray, keep: np.ndarray | None = None,
               kv_now: np.ndarray | None = None) -> None:
        """Fill free slots of ``engines`` from their queues (requeued first), charging prefill.

        ``keep``: the columns of the request matrix that stay (the caller's finished requests are
        dropped in the same copy that inserts the admitted ones); ``kv_now``: KV tokens in use per
        engine over those columns. A one-token response is complete after its prefill: it leaves
        at once and its engine admits again (rare; a loop, not recursion).
        """
        again = self._admit_once(engines, keep, kv_now)
        while again.shape[0]:
            again = self._admit_once(again, None, None)

    def _admit_once(self, engines: np.ndarray, keep: np.ndarray | None,
                    kv_now: np.ndarray | None) -> np.ndarray:
        """One admission round (see :meth:`_admit`); returns engines that must admit again."""
        spec = self.spec
        if kv_now is None:
            kv_now = np.bincount(self.S[ENG], weights=self.S[CTX], minlength=spec.n_engines)
        budget = spec.kv_capacity * (1.0 - spec.kv_watermark)
        req_S, req_F, rows_l, eng_l = [], [], [], []
        has_requeued = np.array([bool(self.requeued[e]) for e in engines.tolist()], dtype=bool)
        for e in engines[has_requeued].tolist():
            free = spec.max_batch - int(self.cnt[e])
            kv_left = budget - kv_now[e]
            taken = 0
            while free > 0 and self.requeued[e]:
                colS, colF = self.requeued[e][0]
                if kv_left < colS[CTX] and (taken or self.cnt[e] > 0):
                    break
                self.requeued[e].pop(0)
                self.n_requeued -= 1
                loc = colS[GID] - self.rid_base
                self.start_iter[loc] = self.iters[e] - self.out.iterations[loc]
                req_S.append(colS[:, None])
                req_F.append(colF[:, None])
                kv_left -= colS[CTX]
                free -= 1
                taken += 1
            if free > 0 and self.qptr[e] < self.qend[e] and not self.requeued[e]:
                cand = self.queue[self.qptr[e]:min(self.qend[e], self.qptr[e] + free)]
                need = np.cumsum(self.kv0[cand])
                take = int(np.searchsorted(need, kv_left, side="right"))
                if take == 0 and not taken and self.cnt[e] == 0:
                    take = 1  # an idle engine always makes progress, even over budget
                if take:
                    rows_l.append(cand[:take])
                    eng_l.append(np.full(take, e, np.int64))
                    self.qptr[e] += take
        rows, eng = self._admit_from_queues(engines[~has_requeued], kv_now, budget)
        if rows.shape[0]:
            rows_l.append(rows)
            eng_l.append(eng)
        parts_S, parts_F = list(req_S), list(req_F)
        charge = None  # tokens each admission forward processes, where that is not the context
        if rows_l:
            rows, eng = np.concatenate(rows_l), np.concatenate(eng_l)
            self.out.start_s[rows] = self.clock[eng]
            self.start_iter[rows] = self.iters[eng]
            s, f = self._new_columns(rows, eng)
            parts_S.append(s)
            parts_F.append(f)
            acc = self.acc
            if acc.prefill_len is not None:
                charge = np.concatenate([c[CTX] for c in req_S] + [acc.prefill_len[rows]])
            if acc.pre_drafted is not None:
                self.out.drafted += int(acc.pre_drafted[rows].sum())
                self.out.lossy += int(acc.pre_lossy[rows].sum())
        again = np.empty(0, np.int64)
        if parts_S:
            new_S = np.concatenate(parts_S, axis=1)
            new_F = np.concatenate(parts_F, axis=1)
            order = np.argsort(new_S[ENG], kind="stable")
            new_S, new_F = new_S[:, order], new_F[:, order]
            self._prefill(new_S[ENG], new_S[CTX] if charge is None else charge[order])
            done = new_S[GEN] >= new_S[LEN]  # complete at prefill (fresh one-token responses)
            if done.any():
                loc = new_S[GID, done] - self.rid_base
                eng_done = new_S[ENG, done]
                self.out.end_s[loc] = self.clock[eng_done]
                self.out.iterations[loc] = 0
                again = np.unique(eng_done)
                new_S, new_F = new_S[:, ~done], new_F[:, ~done]
            self._merge(keep, new_S, new_F)
        elif keep is not None:
            self.S, self.F = self.S.take(keep, axis=1), self.F.take(keep, axis=1)
        self._segments()
        return again

    def _admit_from_queues(self, engines: np.ndarray, kv_now: np.ndarray, budget: float
                           ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, engine) admitted from the static queues of ``engines`` (none has requeued
        requests): per engine, the longest prefix of its next free-slot candidates whose prompts
        fit the KV left, at least one on an idle engine. Vectorized over engines."""
        none = np.empty(0, np.int64)
        if engines.shape[0] == 0:
            return none, none
        L = np.minimum(self.spec.max_batch - self.cnt[engines], self.qend[engines] - self.qptr[engines])
        engines, L = engines[L > 0], L[L > 0]
        if engines.shape[0] == 0:
            return none, none
        first = np.cumsum(L) - L
        rank = np.arange(int(L.sum())) - np.repeat(first, L)
        cand = self.queue[np.repeat(self.qptr[engines], L) + rank]
        plen = self.kv0[cand]
        need = np.cumsum(plen)
        need -= np.repeat(need[first] - plen[first], L)  # cumulative prompt tokens within each engine
        take = np.add.reduceat(need <= np.repeat(budget - kv_now[engines], L), first)
        take[(take == 0) & (self.cnt[engines] == 0)] = 1  # an idle engine always makes progress
        self.qptr[engines] += take
        sel = rank < np.repeat(take, L)
        return cand[sel], np.repeat(engines, L)[sel]

    def _merge(self, keep: np.ndarray | None, new_S: np.ndarray, new_F: np.ndarray) -> None:
        """Request matrix = the ``keep`` columns (all if None) with ``new_S`` (sorted by engine)
        appended to the end of each engine's segment; one gather, no re-sort."""
        E = self.spec.n_engines
        n_old = self.S.shape[1]
        keep = np.arange(n_old) if keep is None else keep
        add = np.bincount(new_S[ENG], minlength=E)
        # self.cnt counts the kept columns of each engine (the caller removed the finished ones).
        n_new = new_S.shape[1]
        src = np.empty(keep.shape[0] + n_new, np.int64)
        src[np.arange(keep.shape[0]) + np.repeat(np.cumsum(add) - add, self.cnt)] = keep
        src[np.repeat(np.cumsum(self.cnt), add) + np.arange(n_new)] = n_old + np.arange(n_new)
        self.S = np.concatenate([self.S, new_S], axis=1).take(src, axis=1)
        self.F = np.concatenate([self.F, new_F], axis=1).take(src, axis=1)
        self.cnt += add

    def _finish(self, done: np.ndarray) -> None:
        S = self.S
        eng = S[ENG, done]
        loc = S[GID, done] - self.rid_base
        self.out.end_s[loc] = self.clock[eng]
        self.out.iterations[loc] = self.iters[eng] - self.start_iter[loc]
        keep = np.flatnonzero(~done)
        gone = np.bincount(eng, minlength=self.spec.n_engines)
        self.cnt -= gone
        if self.pending:
            waiting = np.flatnonzero(gone)
            if self.stop_at is not None:  # an engine past the stop time admits nothing more
                waiting = waiting[self.clock[waiting] < self.stop_at]
            has_queue = (self.qptr[waiting] < self.qend[waiting]) | np.array(
                [bool(self.requeued[e]) for e in waiting.tolist()], dtype=bool)
            if has_queue.any():
                # KV in use after the finish: exact integer sums, whatever the order.
                kv_now = np.zeros(self.spec.n_engines)
                kv_now[self.active] = np.add.reduceat(S[CTX], self.seg)
                kv_now -= np.bincount(eng, weights=S[CTX, done], minlength=self.spec.n_engines)
                self._admit(waiting[has_queue], keep, kv_now)
                return
        # take() along columns is about twice as fast as a boolean mask over this (rows, n) matrix.
        self.S, self.F = S.take(keep, axis=1), self.F.take(keep, axis=1)
        self._segments()

    def _freeze(self, engines: np.ndarray) -> None:
        """Stop the engines of mask ``engines`` (their clock passed the stop time): record the progress
        of their running requests and of every waiting preempted request, and leave their queues."""
        S = self.S
        on = engines[S[ENG]]
        cols = np.flatnonzero(on)
        loc = S[GID, cols] - self.rid_base
        self.out.progress[loc] = S[GEN, cols]
        self.out.iterations[loc] = self.iters[S[ENG, cols]] - self.start_iter[loc]
        for e in range(self.spec.n_engines):
            if self.requeued[e] and (engines[e] or self.cnt[e] == 0 or self.clock[e] >= self.stop_at):
                for colS, _ in self.requeued[e]:
                    self.out.progress[colS[GID] - self.rid_base] = colS[GEN]
                self.n_requeued -= len(self.requeued[e])
                self.requeued[e] = []
        self.qptr[engines] = self.qend[engines]
        self.cnt[engines] = 0
        keep = np.flatnonzero(~on)
        self.S, self.F = S.take(keep, axis=1), self.F.take(keep, axis=1)
        self._segments()

    def _preempt(self, kv: np.ndarray) -> None:
        """Evict the latest-admitted requests of engines whose KV overflows (vLLM recompute)."""
        cap = self.spec.kv_capacity
        S = self.S
        drop = np.zeros(S.shape[1], bool)
        starts = np.concatenate([[0], np.cumsum(self.cnt)])
        for e in np.flatnonzero(kv > cap).tolist():
            over = kv[e] - cap
            j = int(starts[e + 1]) - 1
            while over > 0 and j > int(starts[e]):  # keep at least one request running
                drop[j] = True
                over -= S[CTX, j]
                self.cnt[e] -= 1
                loc = S[GID, j] - self.rid_base
                self.out.preemptions[loc] += 1
                # Progress made so far is kept; start_iter is rebased on readmission.
                col = S[:, j].copy()
                self.out.iterations[loc] = self.iters[e] - self.start_iter[loc]
                self.requeued[e].insert(0, (col, self.F[:, j].copy()))
                self.n_requeued += 1
                j -= 1
        if drop.any():
            self.S, self.F = S[:, ~drop], self.F[:, ~drop]
            self._segments()

    # --- the hot loop -----------------------------------------------------------------------------
    def run(self) -> StepOutcome:
        """Advance all engines until every rollout of the step has finished."""
        if self.fast:
            return run_windowed(self)
        spec, acc, policy, cost, out = self.spec, self.acc, self.policy, self.cost, self.out
        E = spec.n_engines
        match, plen_at, kmax = acc.match, acc.proposal_len, acc.kmax
        cap = float(spec.kv_capacity)
        tree_w, lossy = acc.tree_width, acc.lossy
        tri = tree_pairs(kmax, tree_w)
        last_t = np.zeros(E)
        self._admit(np.arange(E))
        tl = self.timeline
        it = drafted = req_iters = prev_ksum = lossy_n = 0
        stop_at = self.stop_at
        while self.S.shape[1]:
            if stop_at is not None:
                frozen = (self.clock >= stop_at) & (self.cnt > 0)
                if frozen.any():
                    self._freeze(frozen)
                    if not self.S.shape[1]:
                        break
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
            last_t = t
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
        if stop_at is not None:  # preempted requests waiting on engines that stopped
            self._freeze(np.zeros(E, bool))
        tl.add(it, self.clock, self.cnt, np.zeros(E))
        out.lossy += lossy_n
        out.drafted, out.accepted = drafted + out.drafted, accepted_total(self.ro, req_iters)
        out.request_iterations, out.kernel_iterations = req_iters, it
        out.timeline = tl.arrays(E)
        return out


def _conf_thunk(acc: StepAcceptance, pos: np.ndarray):
    """A PolicyState.conf_fn bound to this iteration's positions (gathered only if read)."""
    frozen = pos.copy()
    return lambda: acc.conf_at(frozen)
