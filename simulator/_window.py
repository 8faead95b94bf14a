"""The windowed fast path of the engine kernel: many iterations per policy decision.

A policy with ``decide_with_horizon`` (the contract is in ``policies.Policy``) keeps each
engine's decision until an *event* in that engine: a request finishes, a request reaches its
decision horizon, or the engine's KV use passes its capacity. Between events an engine's
iterations depend only on the (fixed) drafts and on the match lengths, which are known in
advance, so instead of one decision, one cost-model call and ~40 bookkeeping calls per
iteration, each *window*:

1. decides once for every active request (draft length k and horizon);
2. chases W iterations of every active request at once,
   ``pos[j+1] = pos[j] + min(k+1, m_{pos[j]} + 1)``: three numpy calls per iteration;
3. finds each engine's first event and keeps its iterations up to and including it (w_e <= W);
   an engine never interacts with another before the barrier, so the others need not stop;
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

from calibration import IterationBatch
from policies import PolicyState

# Window lengths tried, and rough costs (seconds) of a window, of one chased iteration and of one
# request-iteration on this kind of machine. They only steer the choice of W (speed), never results.
_W_CHOICES = np.array([1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256])
_COST_WINDOW, _COST_WINDOW_REQ, _COST_STEP, _COST_REQ = 150e-6, 40e-9, 3e-6, 5e-9


def has_fast_path(policy: Any) -> bool:
    return callable(getattr(policy, "decide_with_horizon", None))


class _Grid:
    """Timeline samples (every ``every``-th iteration of every engine), collected as engines pass
    them and laid out at the end like the lockstep kernel's rows."""

    def __init__(self, n_engines: int, every: int) -> None:
        self.E, self.every = n_engines, every
        self.parts: list[tuple[np.ndarray, ...]] = []

    def record(self, g0: np.ndarray, w: np.ndarray, active: np.ndarray, clock: np.ndarray,
               cnt: np.ndarray, t: np.ndarray) -> None:
        """Engine ``active[a]`` ran iterations g0[a] .. g0[a]+w[a]-1; clock[j, a] is its clock
        before iteration j of the window and t[j, a] that iteration's time."""
        every, A = self.every, w.shape[0]
        first = (-g0) % every  # window offset of each engine's first sampled iteration
        count = (w - first + every - 1) // every
        total = int(count.sum())
        if total == 0:
            return
        c = np.repeat(np.arange(A), count)
        r = np.repeat(first - every * (np.cumsum(count) - count), count) + every * np.arange(total)
        flat = r * A + c
        self.parts.append(((g0[c] + r) // every, active[c], clock.reshape(-1)[flat], cnt[c],
                           t.reshape(-1)[flat]))

    def arrays(self, iters: np.ndarray, clock: np.ndarray) -> dict[str, np.ndarray]:
        """The lockstep kernel's timeline: rows at kernel iterations 0, every, ... < K and K."""
        E, every = self.E, self.every
        K = int(iters.max()) if iters.size else 0
        rows = -(-K // every)
        # An engine that has finished reads as idle at its final clock.
        cl = np.repeat(clock[None, :], rows, axis=0)
        cn = np.zeros((rows, E), np.int64)
        t = np.zeros((rows, E))
        if self.parts:
            s, e, c, n, tt = (np.concatenate(x) for x in zip(*self.parts))
            cl[s, e], cn[s, e], t[s, e] = c, n, tt
        its = np.append(np.arange(rows, dtype=np.int64) * every, K)
        return {
            "kernel_iteration": np.repeat(its, E),
            "engine": np.tile(np.arange(E, dtype=np.int32), rows + 1),
            "time_s": np.concatenate([cl.ravel(), clock]),
            "batch_size": np.concatenate([cn.ravel(), np.zeros(E, np.int64)]).astype(np.int32),
            "iter_time_s": np.concatenate([t.ravel(), np.zeros(E)]),
        }


def _choose_window(lead: np.ndarray, adv: np.ndarray, seg: np.ndarray, kv_room: np.ndarray) -> int:
    """W maximizing (engine-iterations expected before each engine's first event) / (window cost).

    ``lead`` is each request's tokens to its next event, ``adv`` its expected tokens per
    iteration, ``kv_room`` each engine's KV tokens left before capacity.
    """
    est = np.minimum.reduceat(lead / adv, seg)
    np.minimum(est, kv_room / np.add.reduceat(adv, seg), out=est)
    np.maximum(est, 0.0, out=est)
    useful = np.minimum(_W_CHOICES[:, None], est[None, :] + 1.0).sum(axis=1)
    n = lead.shape[0]
    cost = _COST_WINDOW + _COST_WINDOW_REQ * n + _W_CHOICES * (_COST_STEP + _COST_REQ * n)
    return int(_W_CHOICES[np.argmax(useful / cost)])


class _Buffers:
    """Reused scratch memory: fresh multi-MB temporaries each window cost page faults."""

    def __init__(self) -> None:
        self.P = np.empty(0, np.int64)
        self.X = np.empty(0, np.int64)

    def get(self, name: str, rows: int, cols: int) -> np.ndarray:
        buf = getattr(self, name)
        if buf.shape[0] < rows * cols:
            buf = np.empty(max(rows * cols, 2 * buf.shape[0]), np.int64)
            setattr(self, name, buf)
        return buf[:rows * cols].reshape(rows, cols)


def run_windowed(kern: Any) -> Any:
    """StepKernel.run for a policy with ``decide_with_horizon``; returns the same StepOutcome."""
    from simulator._kernel import CTX, ENG, GEN, GID, LEN, PLEN, POS, PRED

    spec, acc, policy, cost, out = kern.spec, kern.acc, kern.policy, kern.cost, kern.out
    E = spec.n_engines
    kmax = acc.kmax
    match, plen_at = acc.match, acc.proposal_len
    cap = int(spec.kv_capacity)
    tri = (np.arange(kmax + 1) + 1) * (np.arange(kmax + 1) + 2) // 2  # causal pairs of a k+1 verify
    grid = _Grid(E, kern.timeline.every)
    needs_cmax = getattr(cost, "reads_context_max", lambda: True)
    buf = _Buffers()
    last_t = np.zeros(E)
    drafted = req_iters = 0
    gain = 0.5  # accepted per drafted token, measured on the previous window (steers W only)
    kern._admit(np.arange(E))
    while kern.S.shape[1]:
        S, F, active, seg = kern.S, kern.F, kern.active, kern.seg
        n, A = S.shape[1], active.shape[0]
        cnt_a = kern.cnt[active]
        gen, pos, ctx = S[GEN], S[POS], S[CTX]
        c_sum0 = np.add.reduceat(ctx, seg)
        kv_used = np.zeros(E)
        kv_used[active] = c_sum0 / float(cap)
        zeros = np.zeros(n, np.int32)
        state = PolicyState(
            engine=S[ENG], request=S[GID], generated=gen, prompt_len=S[PLEN], predicted_len=F[PRED],
            last_drafted=zeros, last_accepted=zeros, accept_ema=np.full(n, np.nan),
            batch_size=kern.cnt, kv_used=kv_used, iteration=kern.iters, last_iter_time=last_t,
            kmax=kmax, max_len=kern.max_len, step=kern.step)
        k, horizon = policy.decide_with_horizon(state)
        k = np.minimum(k, kmax)
        np.maximum(k, 0, out=k)
        until = S[LEN] if horizon is None else np.minimum(S[LEN], horizon)
        lead = until - gen  # tokens to the request's next event (finish or horizon), >= 1
        W = _choose_window(lead, 1.0 + gain * k, seg, (cap - c_sum0).astype(np.float64))
        stop = lead
        stop += pos  # ... as a flat position

        # Chase W iterations of every request: P[j] is the position before iteration j. Rows hold
        # P[j] - j while chasing (then the gather reads match[j:] and the +1 of the target's token
        # needs no call); positions past an event are discarded below, and mode="clip" keeps a
        # chase past the last rollout inside the array.
        k8 = k.astype(np.int8)
        P = buf.get("P", W + 1, n)
        P[0] = pos
        m = np.empty(n, np.int8)
        for j in range(W):
            np.take(match[j:], P[j], out=m, mode="clip")
            np.minimum(m, k8, out=m)
            np.add(P[j], m, out=P[j + 1])
        P += np.arange(W + 1)[:, None]

        # Each engine's first event: the first iteration after which a request reached its stop,
        # or after which its KV use (sum of contexts) passed capacity.
        ev = np.full(A, W, np.int64)
        hit = np.flatnonzero(P[W] >= stop)
        eng_of = np.repeat(np.arange(A), cnt_a)  # active-engine index of each column
        if hit.size:
            np.minimum.at(ev, eng_of[hit], (P[1:, hit] < stop[hit]).sum(axis=0))
        csum = np.add.reduceat(P, seg, axis=1)  # (W+1, A): row j = contexts before iteration j
        csum += c_sum0 - csum[0]
        if (csum[W] > cap).any():
            np.minimum(ev, (csum[1:] <= cap).sum(axis=0), out=ev)
        w = np.minimum(ev + 1, W)
        ar = np.arange(A)
        kv_hit = csum[w, ar] > cap
        valid = np.arange(W)[:, None] < w

        # Cost-model features of every (iteration, engine) pair, exactly as the lockstep kernel
        # builds them one iteration at a time (integer sums, converted once).
        off = ctx - pos  # context = position + off, fixed per request
        Pw = P[:W]
        X = buf.get("X", W, n)
        k_hi = np.maximum.reduceat(k, seg)
        c_max = (_context_max(Pw, off, ctx, seg, eng_of, k_hi * W, X) if needs_cmax()
                 else np.zeros(A))  # the cost model would multiply it by 0 (or never read it)
        if plen_at is None:
            draft_i = np.add.reduceat(k, seg)
            q_max = k_hi + 1.0
            if (np.minimum.reduceat(k, seg) == k_hi).all():
                # One draft length per engine (fixed, ar, das before history): the pairs are
                # (k+1) * contexts + n * tri[k], no pass over the window.
                qc = csum[:W] * (k_hi + 1) + cnt_a * tri[k_hi]
            else:
                np.multiply(Pw, k + 1, out=X)
                qc = np.add.reduceat(X, seg, axis=1)
                qc += np.add.reduceat(off * (k + 1) + tri[k], seg)
            drafted += int((draft_i * w).sum())
            draft = draft_i.astype(np.float64)
        else:
            # The drafter's proposal length clips k per position (it never changes acceptance:
            # match <= proposal_len), so q, drafts and pairs vary per iteration.
            kk = np.minimum(plen_at.take(Pw, mode="clip"), k)
            draft_i = np.add.reduceat(kk, seg, axis=1)
            q_max = np.maximum.reduceat(kk, seg, axis=1) + 1.0
            qc = np.add.reduceat((kk + 1) * (Pw + off) + tri[kk], seg, axis=1)
            drafted += int(draft_i[valid].sum())
            draft = draft_i.astype(np.float64)
        n_f = cnt_a.astype(np.float64)
        t = _price(cost, valid, n_f, draft, q_max, csum[:W], c_max, qc)

        # Clocks: row j = clock before iteration j; zeros past an engine's event add nothing.
        clock = np.empty((W + 1, A))
        clock[0] = kern.clock[active]
        clock[1:] = t
        np.cumsum(clock, axis=0, out=clock)
        grid.record(kern.iters[active], w, active, clock, cnt_a, t)
        kern.clock[active] = clock[W]
        kern.iters[active] += w
        last_t[active] = t[w - 1, ar]
        steps = int((cnt_a * w).sum())
        req_iters += steps

        moved = P.ravel().take(np.repeat(w * n, cnt_a) + np.arange(n))
        moved -= pos
        window_drafted = int((np.add.reduceat(k, seg) * w).sum())
        if window_drafted:
            gain = min(1.0, max(0.05, (int(moved.sum()) - steps) / window_drafted))
        S[GEN:CTX + 1] += moved
        done = S[GEN] >= S[LEN]
        if done.any():
            kern._finish(done)
        if kv_hit.any() and kern.S.shape[1]:
            kv = np.bincount(kern.S[ENG], weights=kern.S[CTX], minlength=E)
            if (kv > cap).any():
                kern._preempt(kv)

    out.drafted, out.accepted = drafted, int(kern.ro.response_len.sum()) - req_iters
    out.request_iterations = req_iters
    out.kernel_iterations = int(kern.iters.max()) if E else 0
    out.timeline = grid.arrays(kern.iters, kern.clock)
    return out


def _context_max(Pw: np.ndarray, off: np.ndarray, ctx: np.ndarray, seg: np.ndarray, eng_of: np.ndarray,
                 reach: np.ndarray, X: np.ndarray) -> np.ndarray:
    """float (W, A): longest context of each engine before each iteration of the window.

    Only requests within ``reach`` (W x the engine's largest k) tokens of the engine's longest
    context can overtake it in W iterations (each iteration adds at most k+1 tokens to one and at
    least 1 to the leader), so the max runs over those few columns, not the whole window.
    """
    lead = np.maximum.reduceat(ctx, seg)
    cand = np.flatnonzero(ctx >= (lead - reach)[eng_of])
    if cand.shape[0] * 2 > ctx.shape[0]:
        np.add(Pw, off, out=X)
        return np.maximum.reduceat(X, seg, axis=1).astype(np.float64)
    # Every engine keeps its own leader, so each segment start has a candidate.
    starts = np.searchsorted(cand, seg)
    return np.maximum.reduceat(Pw[:, cand] + off[cand], starts, axis=1).astype(np.float64)


def _price(cost: Any, valid: np.ndarray, n: np.ndarray, draft: np.ndarray, q_max: np.ndarray,
           c_sum: np.ndarray, c_max: np.ndarray, qc: np.ndarray) -> np.ndarray:
    """(W, A) seconds of the kept (iteration, engine) pairs, 0 elsewhere: one cost-model call over
    just the kept pairs (the model is elementwise, so each value is what a one-iteration call gives).
    ``n`` is per engine (A,); ``draft`` and ``q_max`` per engine or per pair; the rest per pair."""
    W, A = valid.shape
    vi = np.flatnonzero(valid)
    cols = vi % A

    def pick(x: np.ndarray) -> np.ndarray:
        return x[cols] if x.ndim == 1 else x.reshape(W * A).take(vi)

    nv = n[cols]
    dv = pick(draft)
    batch = IterationBatch(n=nv, q_sum=nv + dv, q_max=pick(q_max), c_sum=pick(c_sum).astype(np.float64),
                           c_max=pick(c_max), qc_sum=pick(qc).astype(np.float64), draft_tokens=dv)
    t = np.zeros(W * A)
    t[vi] = cost.iteration_time(batch)
    return t.reshape(W, A)
