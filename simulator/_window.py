"""The windowed fast path of the engine kernel: many iterations per policy decision.

A policy with ``decide_with_horizon`` (the contract is in ``policies.Policy``) keeps each
engine's decision until an *event* in that engine: a request reaches its decision horizon, the
engine's KV use passes its capacity, or a request finishes such that something changes (the
engine admits queued requests, or its batch falls below the policy's batch floor; other finishes
just leave the batch). Between events an engine's iterations depend only on the (fixed) drafts
and on the match lengths, which are known in advance, so instead of one decision, one cost-model
call and ~40 bookkeeping calls per iteration, each *window*:

1. decides once for every active request (draft length k, horizon, batch floor);
2. chases W iterations of every active request at once,
   ``pos[j+1] = min(pos[j] + min(k, m_{pos[j]}) + 1, end)``: four numpy calls per iteration
   (a request that finished stays at its end, so what it leaves behind is known);
3. finds each engine's first event and keeps its iterations up to and including it (w_e <= W);
   an engine never interacts with another before the barrier, so the others need not stop;
   requests that finish earlier in the window leave the engine's sums from the next iteration;
4. prices every kept (iteration, engine) pair in ONE cost-model call over a (W, engines) batch
   and advances each engine's clock with a cumulative sum (the same sequential float additions
   as one iteration at a time);
5. runs the lockstep kernel's own finish / admission / preemption code at the events.

Engines thus drift apart in iteration count inside a step, but every number equals the lockstep
kernel's bit for bit: features are integer sums, the cost model is elementwise, clocks add the
same terms in the same order (tests/simulator/test_window.py). Iterations chased past an
engine's event are discarded; the window length W is chosen each time to balance that waste
against the fixed cost of a window.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from specroll.policies import PolicyState
from specroll.simulator._step import CTX, ENG, GEN, GID, LEN, PLEN, POS, PRED, tree_pairs
from specroll.simulator._windowparts import (
    Buffers,
    banded_reduceat,
    choose_window,
    context_max,
    first_at_least,
    price,
    row_bands,
)


def has_fast_path(policy: Any) -> bool:
    return callable(getattr(policy, "decide_with_horizon", None))


def run_windowed(kern: Any) -> None:
    """StepKernel.advance for a policy with ``decide_with_horizon``: the same numbers as the
    iteration loop. An engine stops at its time limit (``kern.until``: the window is cut before the
    first iteration starting at or after it) or at a finish while watched (``kern.events``: the
    window ends there for it); the kernel parks stopped engines between windows."""

    spec, acc, cost, out = kern.spec, kern.acc, kern.cost, kern.out
    E, kmax = spec.n_engines, acc.kmax
    match1, plen_at = acc.match1, acc.proposal_len
    cap = int(spec.kv_capacity)
    tree_w, lossy = acc.tree_width, acc.lossy
    tri = tree_pairs(kmax, tree_w)  # pairs inside a verify of depth k (tree_w branches)
    grid = kern.grid
    buf = Buffers()
    needs_cmax = getattr(cost, "reads_context_max", lambda: True)
    needs_qmax = getattr(cost, "reads_query_max", lambda: True)
    last_t = kern.last_t
    drafted = req_iters = lossy_n = 0
    gain = kern.gain  # accepted per drafted token, measured on the previous window (steers W only)
    until = kern.until
    timed = bool(np.isfinite(until).any())
    kern._stopping()
    while kern.S.shape[1]:
        S = kern.S
        n = S.shape[1]
        cnt_a = kern.cnt[kern.active]
        c_sum0 = np.add.reduceat(S[CTX], kern.seg)
        k, horizon, floor = _decide(kern, c_sum0, last_t)
        to_end = S[LEN] - S[GEN]
        # Tokens to the horizon where it comes before the finish (far away otherwise: no overflow).
        to_hz = None if horizon is None else np.where(horizon < S[LEN], horizon - S[GEN], 1 << 40)
        allowed = _absorbable_finishes(kern, kern.active, cnt_a, floor)
        W, lim = choose_window(to_end, to_hz, 1.0 + gain * k, kern.seg, cnt_a, allowed,
                               (cap - c_sum0).astype(float))
        # The window works on engines ordered by how long they chase (longest first), so that
        # each iteration chases a prefix of the columns; ``perm`` maps its columns to S's.
        perm = None
        if (lim < W).any():
            order = np.argsort(-lim, kind="stable")
            cnt = cnt_a[order]
            seg = np.cumsum(cnt) - cnt
            perm = np.repeat(kern.seg[order] - seg, cnt) + np.arange(n)
            active, lim, allowed, c_sum0 = kern.active[order], lim[order], allowed[order], c_sum0[order]
            k, to_end = k[perm], to_end[perm]
            to_hz = None if to_hz is None else to_hz[perm]
            pos, ctx = S[POS, perm], S[CTX, perm]
        else:
            active, seg, cnt = kern.active, kern.seg, cnt_a
            pos, ctx = S[POS], S[CTX]
        A = active.shape[0]
        bands = row_bands(lim, cnt)

        # Chase: P[j] is the position before iteration j, clamped at the response's end (a
        # finished request stays there); mode="clip" keeps the gather in the array regardless.
        # Within a band of rows the engines still chasing are a prefix of the columns.
        end = pos + to_end
        k1 = (k + 1).astype(np.int8)
        P = buf.get("P", W + 1, n)
        P[0] = pos
        m = np.empty(n, np.int8)
        for r0, r1, _, c in bands:
            Pc, mc, kc, ec = P[:, :c], m[:c], k1[:c], end[:c]
            for j in range(max(r0, 1) - 1, r1 - 1):
                row, nxt = Pc[j], Pc[j + 1]
                np.take(match1, row, out=mc, mode="clip")
                np.minimum(mc, kc, out=mc)
                np.add(row, mc, out=nxt)
                np.minimum(nxt, ec, out=nxt)

        # Events: each engine's first horizon crossing and (allowed+1)-th finish (``ev``); the
        # finishes before that leave the engine's sums from the next iteration on.
        ev = lim - 1  # an engine that reaches its limit stops there, as if at an event
        last = np.repeat(lim, cnt)  # each column's last chased row
        gone = _first_events(P, last, pos, end, to_hz, cnt, allowed, ev)
        csum = banded_reduceat(np.add, P, seg, bands, W + 1)  # row r: contexts before iteration r
        csum += c_sum0 - csum[0]
        off = ctx - pos  # context = position + off, fixed per request
        csum_kv, final = csum, None
        if gone is not None:
            g_col, g_eng, g_fin = gone
            final = end[g_col] + off[g_col]  # a leaver's context, constant once it has finished
            # Row r without a request that finished in iteration f: r >= f+1 for the cost of
            # iteration r, r >= f+2 for the KV check after iteration r-1 (it is still there).
            csum_kv = csum - _from_row(final, g_fin + 2, g_eng, W + 1, A)
            csum -= _from_row(final, g_fin + 1, g_eng, W + 1, A)
        rows = np.arange(W + 1)[:, None]
        over = (csum_kv[1:] > cap) & (rows[1:] <= lim)
        if over.any():
            np.minimum(ev, np.where(over.any(axis=0), over.argmax(axis=0), W), out=ev)
        w = ev + 1
        ar = np.arange(A)
        kv_hit = csum_kv[w, ar] > cap
        valid = rows[:W] < w

        # Cost-model features of every (iteration, engine) pair, exactly as the lockstep kernel
        # builds them one iteration at a time (integer sums, converted once).
        Pw = P[:W]
        n_req = cnt
        if gone is not None:
            n_req = cnt - _from_row(np.ones_like(g_col), g_fin + 1, g_eng, W, A)
        if plen_at is None:
            draft, q_max, qc = _features_fixed_k(k, seg, n_req, csum, Pw, off, tri, bands, gone, final,
                                                 needs_qmax(), tree_w)
        else:
            draft, q_max, qc = _features_proposals(plen_at, k, seg, Pw, off, tri, gone, tree_w)
        c_max = np.zeros(A)  # the cost model would multiply it by 0 or never read it
        if needs_cmax():
            dead = None if gone is None else rows[:W] > g_fin
            c_max = context_max(Pw, off, ctx, seg, cnt, np.maximum.reduceat(k, seg) * W,
                                None if gone is None else g_col, dead, buf.get("X", W, n))
        t = price(cost, valid, n_req.astype(np.float64), draft.astype(np.float64), q_max, csum[:W], c_max,
                  qc)

        # Clocks: row j = clock before iteration j; zeros past an engine's event add nothing.
        clock = np.empty((W + 1, A))
        clock[0] = kern.clock[active]
        clock[1:] = t
        np.cumsum(clock, axis=0, out=clock)
        if timed:  # no iteration starts at or after the engine's time limit: cut the window there
            n_ok = (clock[:W] < until[active]).sum(axis=0)
            if (n_ok < w).any():
                w = np.minimum(w, n_ok)
                valid = rows[:W] < w
                kv_hit = csum_kv[w, ar] > cap
                t = np.where(valid, t, 0.0)
                clock[1:] = t
                np.cumsum(clock, axis=0, out=clock)
        if lossy is not None:
            lossy_n += _window_lossy(lossy, P, w, cnt, end)
        drafted += int((draft * valid).sum()) if draft.ndim == 2 else int((draft * w).sum())
        g0 = kern.iters[active]
        grid.record(g0, w, active, clock, n_req, t)
        kern.clock[active] = clock[W]
        kern.iters[active] = g0 + w
        last_t[active] = t[w - 1, ar]
        steps = int((n_req * valid).sum()) if n_req.ndim == 2 else int((n_req * w).sum())
        req_iters += steps

        # Positions after each request's last kept iteration (a leaver's end: the chase kept it there).
        moved = P.ravel().take(np.repeat(w * n, cnt) + np.arange(n))
        moved -= pos
        window_drafted = int((np.add.reduceat(k, seg) * w).sum())
        if window_drafted:
            gain = min(1.0, max(0.05, (int(moved.sum()) - steps) / window_drafted))
        left = None
        if gone is not None:
            through = g_fin < w[g_eng] - 1
            cols = g_col[through] if perm is None else perm[g_col[through]]
            left = (g_eng[through], g_fin[through], S[GID, cols])
        if perm is not None:  # back to S's column order (one scatter, then a dense add)
            back = np.empty_like(moved)
            back[perm] = moved
            moved = back
        S[GEN:CTX + 1] += moved
        done = S[GEN] >= S[LEN]
        if done.any():
            kern._finish(done)
        if left is not None and left[0].size:  # those that left mid-window ended at their own iteration
            loc = left[2] - kern.rid_base
            out.end_s[loc] = clock[left[1] + 1, left[0]]
            out.iterations[loc] = g0[left[0]] + left[1] + 1 - kern.start_iter[loc]
        if kv_hit.any() and kern.S.shape[1]:
            kv = np.bincount(kern.S[ENG], weights=kern.S[CTX], minlength=E)
            if (kv > cap).any():
                kern._preempt(kv)
        kern._stopping()

    kern.n_lossy += lossy_n
    kern.n_drafted += drafted
    kern.n_req_iters += req_iters
    kern.gain = gain


def _decide(kern: Any, c_sum0: np.ndarray, last_t: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(k clipped to [0, kmax], horizon or None, batch floor or None) for every active request."""

    S, E, n = kern.S, kern.spec.n_engines, kern.S.shape[1]
    kv_used = np.zeros(E)
    kv_used[kern.active] = c_sum0 / float(kern.spec.kv_capacity)
    zeros = np.zeros(n, np.int32)  # fields the contract says the policy does not read
    state = PolicyState(
        engine=S[ENG], request=S[GID], generated=S[GEN], prompt_len=S[PLEN], predicted_len=kern.F[PRED],
        last_drafted=zeros, last_accepted=zeros, accept_ema=np.full(n, np.nan), batch_size=kern.cnt,
        kv_used=kv_used, iteration=kern.iters, last_iter_time=last_t, kmax=kern.acc.kmax,
        max_len=kern.max_len, step=kern.step)
    k, horizon, floor = kern.policy.decide_with_horizon(state)
    k = np.minimum(k, kern.acc.kmax)
    np.maximum(k, 0, out=k)
    return k, horizon, floor


def _absorbable_finishes(kern: Any, active: np.ndarray, cnt: np.ndarray, floor: np.ndarray | None
                         ) -> np.ndarray:
    """Per active engine, how many finishes a window can run through: none where the engine would
    admit queued or preempted requests or the cluster watches it, else as many as keep its batch at
    the policy's floor (the last request's finish always ends the window)."""
    allowed = cnt - 1 if floor is None else np.minimum(cnt - np.maximum(floor[active], 1), cnt - 1)
    # A watched engine stops at its first finish (the cluster acts there), like one that admits.
    pending = (kern.qptr[active] < kern.qend[active]) | kern.events[active]
    if kern.n_requeued:
        pending |= np.array([bool(kern.requeued[e]) for e in active.tolist()], dtype=bool)
    return np.where(pending, 0, np.maximum(allowed, 0))


def _first_events(P: np.ndarray, last: np.ndarray, pos: np.ndarray, end: np.ndarray,
                  to_hz: np.ndarray | None, cnt: np.ndarray, allowed: np.ndarray, ev: np.ndarray
                  ) -> tuple[np.ndarray, ...] | None:
    """Lower ``ev`` (per engine) to the iteration of each engine's first horizon crossing and of its
    (allowed+1)-th finish within the rows it chased (``last`` per column); return the requests that
    finish before that one (they leave mid-window) as (columns, engine, finish iteration), grouped
    by engine."""
    n = P.shape[1]
    reached = P.reshape(-1).take(last * n + np.arange(n))  # each column's last chased position
    eng_of = None
    if to_hz is not None:
        hz = pos + to_hz
        crossed = np.flatnonzero(reached >= hz)
        if crossed.size:
            eng_of = np.repeat(np.arange(cnt.shape[0]), cnt)
            first = first_at_least(P, crossed, hz[crossed], last[crossed])
            np.minimum.at(ev, eng_of[crossed], first - 1)
    col = np.flatnonzero(reached >= end)
    if col.size == 0:
        return None
    eng = (np.repeat(np.arange(cnt.shape[0]), cnt) if eng_of is None else eng_of)[col]
    fin = first_at_least(P, col, end[col], last[col]) - 1  # the iteration in which each finished
    order = np.lexsort((fin, eng))
    col, eng, fin = col[order], eng[order], fin[order]
    rank = np.arange(col.shape[0]) - np.searchsorted(eng, eng)
    ending = rank == allowed[eng]
    np.minimum.at(ev, eng[ending], fin[ending])
    sel = rank < allowed[eng]
    return (col[sel], eng[sel], fin[sel]) if sel.any() else None


def _from_row(values: np.ndarray, row: np.ndarray, col: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """int (rows, cols): ``values`` added at (row, col) and carried to every later row; rows past
    the end are dropped."""
    M = np.zeros((rows + 1, cols), np.int64)
    np.add.at(M, (np.minimum(row, rows), col), values)
    return np.cumsum(M[:rows], axis=0)


def _features_fixed_k(k, seg, cnt, csum, Pw, off, tri, bands, gone, final, needs_qmax, tree_w=1):
    """(draft, q_max, pairs) per engine or per (iteration, engine), for a k fixed per request.
    A tree of ``tree_w`` branches verifies kq = tree_w * k nodes (``tri`` is then the tree's table)."""
    W, A = Pw.shape[0], seg.shape[0]
    kq = k if tree_w == 1 else k * tree_w
    draft = np.add.reduceat(kq, seg)
    k_hi = np.maximum.reduceat(k, seg)
    kq_hi = k_hi if tree_w == 1 else k_hi * tree_w
    one_k = bool((np.minimum.reduceat(k, seg) == k_hi).all())
    if one_k:
        # One draft length per engine (fixed, ar, das before history): the pairs are
        # (kq+1) * contexts + n * tri[k], no pass over the window.
        qc = csum[:W] * (kq_hi + 1) + cnt * tri[k_hi]
    else:
        qc = np.zeros((W, A), np.int64)
        for r0, r1, a, c in bands:
            r1 = min(r1, W)
            if r1 > r0:
                qc[r0:r1, :a] = np.add.reduceat(Pw[r0:r1, :c] * (kq[:c] + 1), seg[:a], axis=1)
        qc += np.add.reduceat(off * (kq + 1) + tri[k], seg)
    q_max = kq_hi + 1.0 if needs_qmax else np.ones(A)
    if gone is None:
        return draft, q_max, qc
    col, eng, fin = gone
    kg = k[col]
    kqg = kg if tree_w == 1 else kg * tree_w
    if not one_k:
        qc -= _from_row((kqg + 1) * final + tri[kg], fin + 1, eng, W, A)
    draft = draft - _from_row(kqg, fin + 1, eng, W, A)
    if needs_qmax:
        # Largest draft among the requests still there: the staying ones', or a leaver's up to
        # the iteration it finished in (a running max from the last row up).
        stay = kq.copy()
        stay[col] = -1
        M = np.full((W, A), -1, np.int64)
        np.maximum.at(M, (np.minimum(fin, W - 1), eng), kqg)
        q_max = np.maximum(np.maximum.accumulate(M[::-1], axis=0)[::-1], np.maximum.reduceat(stay, seg)) + 1.0
    return draft, q_max, qc


def _features_proposals(plen_at, k, seg, Pw, off, tri, gone, tree_w=1):
    """(draft, q_max, pairs) per (iteration, engine) when the drafter's proposal length clips k per
    position (it never changes acceptance: match <= proposal_len)."""
    kk = np.minimum(plen_at.take(Pw, mode="clip"), k)
    if gone is not None:  # a request that left drafts nothing and adds no pairs
        dead = np.arange(Pw.shape[0])[:, None] > gone[2]
        kk[:, gone[0]] = np.where(dead, 0, kk[:, gone[0]])
    kkq = kk if tree_w == 1 else kk * tree_w
    pairs = (kkq + 1) * (Pw + off) + tri[kk]
    if gone is not None:
        pairs[:, gone[0]] = np.where(dead, 0, pairs[:, gone[0]])
    return (np.add.reduceat(kkq, seg, axis=1), np.maximum.reduceat(kkq, seg, axis=1) + 1.0,
            np.add.reduceat(pairs, seg, axis=1))


def _window_lossy(lossy: Any, P: np.ndarray, w: np.ndarray, cnt: np.ndarray, end: np.ndarray) -> int:
    """Lossy tokens accepted in the kept iterations of a window: iteration r of a column ran if
    r < its engine's w and the request had not finished (P[r] < end); it accepted P[r+1]-P[r]-1."""
    W = int(w.max()) if w.size else 0
    if W == 0:
        return 0
    P0, P1 = P[:W], P[1:W + 1]
    live = (np.arange(W)[:, None] < np.repeat(w, cnt)) & (end > P0)
    return lossy.count(P0[live], P1[live] - P0[live] - 1)
