"""The engine kernel's slow path: admission, finishing, preemption, and the cluster's hooks into it.

Mixed into :class:`specroll.simulator._kernel.StepKernel` (which owns the state; see its
docstring). Besides the static per-engine queues of a step dispatched in advance, the cluster
(simulator/_cluster.py) drives engines from outside between kernel advances: it admits rows it
chose (:meth:`admit_rows`), reads what engines can take (:meth:`room`), stops them at a time
(:meth:`stop_unfinished`), re-prefills them after a weight update (:meth:`reprefill`) and reads
the rollouts that completed (:meth:`take_completed`). While the kernel advances only some engines,
the others are *parked*: their columns wait outside the request matrix, so every numpy call of the
hot loops runs over the advancing engines only.
"""

from __future__ import annotations

import numpy as np

from specroll.simulator._step import CTX, ENG, GEN, GID, LEN, PLEN, POS, PRED


class KernelSlots:
    """Admission, finishing, preemption, parking (state in StepKernel)."""

    # --- segments and parking -----------------------------------------------------------------------
    def _segments(self) -> None:
        """Recompute the engine segments after the request matrix changed shape."""
        self.active = np.flatnonzero(self.cnt > 0)
        self.seg = (np.cumsum(self.cnt) - self.cnt)[self.active]
        self.act_mask = (self.cnt > 0).astype(np.int64)
        self.n_act = self.cnt[self.active].astype(np.float64)
        self.pending = int((self.qend - self.qptr).sum()) + self.n_requeued

    def park(self, engines: np.ndarray) -> None:
        """Move the columns of the engines of mask ``engines`` out of the request matrix (their
        count is kept aside; they read as empty until :meth:`unpark`)."""
        engines = engines & (self.cnt > 0)
        if not engines.any():
            return
        on = engines[self.S[ENG]]
        self._merge_parked(self.S[:, on], self.F[:, on], np.where(engines, self.cnt, 0))
        keep = np.flatnonzero(~on)
        self.S, self.F = self.S.take(keep, axis=1), self.F.take(keep, axis=1)
        self.cnt[engines] = 0
        self._segments()

    def _merge_parked(self, S: np.ndarray, F: np.ndarray, cnt: np.ndarray) -> None:
        if self.PS is None:
            self.PS, self.PF, self.pcnt = S, F, cnt.copy()
            return
        self.PS, self.PF = _interleave(self.PS, self.PF, self.pcnt, S, F, cnt)
        self.pcnt += cnt

    def unpark(self) -> None:
        """Every parked engine back into the request matrix (each keeps its column order)."""
        if self.PS is None:
            return
        self.S, self.F = _interleave(self.S, self.F, self.cnt, self.PS, self.PF, self.pcnt)
        self.cnt += self.pcnt
        self.PS = self.PF = self.pcnt = None
        self._segments()

    # --- admission ------------------------------------------------------------------------------------
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
               kv_now: np.ndarray | None = None, extra: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Fill free slots of ``engines`` from their queues (requeued first), charging prefill.

        ``keep``: the columns of the request matrix that stay (the caller's finished requests are
        dropped in the same copy that inserts the admitted ones); ``kv_now``: KV tokens in use per
        engine over those columns; ``extra``: (rows, engine) the cluster chose, admitted after each
        engine's requeued requests. A one-token response is complete after its prefill: it leaves
        at once and its engine admits again (rare; a loop, not recursion).
        """
        again = self._admit_once(engines, keep, kv_now, extra)
        while again.shape[0]:
            again = self._admit_once(again, None, None, None)

    def _admit_once(self, engines: np.ndarray, keep: np.ndarray | None, kv_now: np.ndarray | None,
                    extra: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
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
        if extra is not None and extra[0].shape[0]:
            rows_l.append(extra[0])
            eng_l.append(extra[1])
        parts_S, parts_F = list(req_S), list(req_F)
        charge = None  # tokens each admission forward processes, where that is not the context
        if rows_l:
            rows, eng = np.concatenate(rows_l), np.concatenate(eng_l)
            self.out.engine[rows] = eng  # the cluster's choice, where it decides at admission
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
                self.completed.append(loc)
                # An engine the cluster feeds refills from the cluster (its caller), not here.
                again = np.unique(eng_done[~self.fed[eng_done]])
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

    # --- finishing and preemption -----------------------------------------------------------------
    def _finish(self, done: np.ndarray) -> None:
        S = self.S
        eng = S[ENG, done]
        loc = S[GID, done] - self.rid_base
        self.out.end_s[loc] = self.clock[eng]
        self.out.iterations[loc] = self.iters[eng] - self.start_iter[loc]
        self.completed.append(loc)
        keep = np.flatnonzero(~done)
        gone = np.bincount(eng, minlength=self.spec.n_engines)
        self.cnt -= gone
        # An engine the cluster watches stops at this finish: the cluster admits for it (its
        # requeued requests and its own choice) when it handles the event.
        self.hit |= (gone > 0) & self.events
        if self.pending:
            waiting = np.flatnonzero((gone > 0) & ~self.events)
            if not self.admit_past_until:  # an engine past its stop time admits nothing more
                waiting = waiting[self.clock[waiting] < self.until[waiting]]
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

    # --- the cluster's hooks (engines unparked) -------------------------------------------------
    def room(self) -> tuple[np.ndarray, np.ndarray]:
        """(free slots, KV tokens left under the admission budget) per engine, after what each engine's
        requeued (preempted) requests will take back first."""
        spec = self.spec
        kv = np.bincount(self.S[ENG], weights=self.S[CTX], minlength=spec.n_engines)
        free = spec.max_batch - self.cnt
        for e in np.flatnonzero([bool(q) for q in self.requeued]).tolist():
            free[e] -= len(self.requeued[e])
            kv[e] += sum(int(c[CTX]) for c, _ in self.requeued[e])
        return np.maximum(free, 0), spec.kv_capacity * (1.0 - spec.kv_watermark) - kv

    def idle(self) -> np.ndarray:
        """bool (E,): engines with nothing running and nothing waiting on them."""
        waiting = (self.qend > self.qptr) | np.array([bool(q) for q in self.requeued], dtype=bool)
        return (self.cnt == 0) & ~waiting

    def admit_rows(self, rows: np.ndarray, eng: np.ndarray, engines: np.ndarray | None = None) -> None:
        """Admit ``rows`` on engines ``eng`` (the cluster's choice; each engine's requeued requests
        first), plus the requeued requests of ``engines``; prefill charged at each engine's clock."""
        touched = np.unique(np.concatenate([eng, [] if engines is None else engines]).astype(np.int64))
        if touched.shape[0] == 0:
            return
        order = np.argsort(eng, kind="stable")
        self._admit(touched, extra=(rows[order].astype(np.int64), eng[order].astype(np.int64)))

    def take_completed(self) -> np.ndarray:
        """Rows (of this kernel's rollouts) that completed since the last call, in completion order."""
        if not self.completed:
            return np.empty(0, np.int64)
        out = np.concatenate(self.completed)
        self.completed = []
        return out

    def wake(self, engines: np.ndarray, t: float) -> None:
        """Idle ``engines`` resume at time ``t``: their clocks jump there (idle time, not busy)."""
        gap = np.maximum(t - self.clock[engines], 0.0)
        self.idle_s[engines] += gap
        self.clock[engines] += gap

    def reprefill(self, engines: np.ndarray, pause_s: float) -> None:
        """A weight update on ``engines`` (after they stopped): ``pause_s`` to load the weights, then
        the KV of every running request recomputed under them (one prefill of its context). The
        preempted ones recompute theirs at readmission anyway."""
        if engines.shape[0] == 0:
            return
        self.clock[engines] += pause_s
        self.sync_s[engines] += pause_s
        on = np.isin(self.S[ENG], engines)
        if on.any():
            self._prefill(self.S[ENG, on], self.S[CTX, on])

    def stop_unfinished(self) -> None:
        """End of a stopped step: record the progress of every running and preempted request
        (``out.progress``) and drop them; queued rollouts stay unstarted."""
        S = self.S
        loc = S[GID] - self.rid_base
        self.out.progress[loc] = S[GEN]
        self.out.iterations[loc] = self.iters[S[ENG]] - self.start_iter[loc]
        for e in range(self.spec.n_engines):
            for colS, _ in self.requeued[e]:
                self.out.progress[colS[GID] - self.rid_base] = colS[GEN]
            self.requeued[e] = []
        self.n_requeued = 0
        self.qptr[:] = self.qend
        self.cnt[:] = 0
        self.S, self.F = S[:, :0], self.F[:, :0]
        self._segments()

    def running_rows(self, engines: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, tokens generated) of the requests running or preempted on ``engines`` (default all)."""
        on = np.ones(self.S.shape[1], bool) if engines is None else np.isin(self.S[ENG], engines)
        rows = [self.S[GID, on] - self.rid_base]
        gen = [self.S[GEN, on]]
        for e in (range(self.spec.n_engines) if engines is None else engines.tolist()):
            for colS, _ in self.requeued[e]:
                rows.append(np.array([colS[GID] - self.rid_base]))
                gen.append(np.array([colS[GEN]]))
        return np.concatenate(rows).astype(np.int64), np.concatenate(gen).astype(np.int64)


def _interleave(S1: np.ndarray, F1: np.ndarray, c1: np.ndarray, S2: np.ndarray, F2: np.ndarray,
                c2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two request matrices grouped by engine (counts ``c1``/``c2``; each engine's columns in one of
    them only) as one, grouped by engine: one gather, no sort."""
    n1 = S1.shape[1]
    c = c1 + c2
    start = np.cumsum(c) - c
    src = np.empty(n1 + S2.shape[1], np.int64)
    src[np.repeat(start, c1) + np.arange(n1) - np.repeat(np.cumsum(c1) - c1, c1)] = np.arange(n1)
    n2 = S2.shape[1]
    src[np.repeat(start, c2) + np.arange(n2) - np.repeat(np.cumsum(c2) - c2, c2)] = n1 + np.arange(n2)
    return (np.concatenate([S1, S2], axis=1).take(src, axis=1),
            np.concatenate([F1, F2], axis=1).take(src, axis=1))
