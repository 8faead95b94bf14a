"""Pieces of the windowed kernel (simulator/_window.py): timeline samples, scratch buffers, the
window-length choice, the longest context and the pricing of (iteration, engine) pairs."""

from __future__ import annotations

from typing import Any

import numpy as np

from specroll.calibration import IterationBatch

# Window lengths tried, and rough costs (seconds) of a window (fixed and per request), of one chased
# iteration and of one chased request-iteration. They only steer the choice of W (speed), never results.
W_CHOICES = np.array([1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256])
_COST_WINDOW, _COST_WINDOW_REQ, _COST_STEP, _COST_REQ = 470e-6, 40e-9, 8.7e-6, 11e-9


class Grid:
    """Timeline samples (every ``every``-th iteration of every engine), collected as engines pass
    them and laid out at the end like the lockstep kernel's rows."""

    def __init__(self, n_engines: int, every: int) -> None:
        self.E, self.every = n_engines, every
        self.parts: list[tuple[np.ndarray, ...]] = []

    def record(self, g0: np.ndarray, w: np.ndarray, active: np.ndarray, clock: np.ndarray,
               cnt: np.ndarray, t: np.ndarray) -> None:
        """Engine ``active[a]`` ran iterations g0[a] .. g0[a]+w[a]-1; clock[j, a] is its clock
        before iteration j of the window, t[j, a] that iteration's time and cnt its batch size
        (per engine, or per iteration and engine)."""
        every, A = self.every, w.shape[0]
        first = (-g0) % every  # window offset of each engine's first sampled iteration
        count = (w - first + every - 1) // every
        total = int(count.sum())
        if total == 0:
            return
        c = np.repeat(np.arange(A), count)
        r = np.repeat(first - every * (np.cumsum(count) - count), count) + every * np.arange(total)
        flat = r * A + c
        batch = cnt[c] if cnt.ndim == 1 else cnt.reshape(-1)[flat]
        self.parts.append(((g0[c] + r) // every, active[c], clock.reshape(-1)[flat], batch,
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


class Buffers:
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


def choose_window(to_end: np.ndarray, to_horizon: np.ndarray | None, adv: np.ndarray, seg: np.ndarray,
                  cnt: np.ndarray, allowed: np.ndarray, kv_room: np.ndarray) -> tuple[int, np.ndarray]:
    """(W, per-engine limits <= W): how many iterations to chase, and for each engine how many of
    them. ``to_end``/``to_horizon``: each request's tokens to its finish / horizon, ``adv`` its
    expected tokens per iteration, ``allowed`` the finishes each engine absorbs, ``kv_room`` its
    KV tokens left. Each engine's limit is a margin over its expected first event (iterations
    chased past an event are wasted; an engine stopped before one just goes on next window), and
    W maximizes the engine-iterations expected per unit of cost. The estimates only steer speed."""
    fin = to_end / adv
    est = np.minimum.reduceat(fin, seg)
    if allowed.any():  # the (allowed+1)-th finish, interpolated between the first and the last
        last = np.maximum.reduceat(fin, seg)
        est += (last - est) * (allowed / np.maximum(cnt - 1, 1))
    if to_horizon is not None:
        np.minimum(est, np.minimum.reduceat(to_horizon / adv, seg), out=est)
    np.minimum(est, kv_room / np.add.reduceat(adv, seg), out=est)
    np.maximum(est, 0.0, out=est)
    want = W_CHOICES[np.minimum(np.searchsorted(W_CHOICES, 1.5 * est + 2.0), W_CHOICES.shape[0] - 1)]
    lim = np.minimum(W_CHOICES[:, None], want[None, :])  # (choices, engines)
    useful = np.minimum(lim, est[None, :] + 1.0).sum(axis=1)
    cost = (_COST_WINDOW + _COST_WINDOW_REQ * to_end.shape[0] + W_CHOICES * _COST_STEP
            + _COST_REQ * (lim * cnt[None, :]).sum(axis=1))
    best = int(np.argmax(useful / cost))
    return int(W_CHOICES[best]), lim[best]


def row_bands(lim: np.ndarray, cnt: np.ndarray) -> list[tuple[int, int, int, int]]:
    """For engines ordered by non-increasing ``lim`` (iterations chased), the (first row, end row,
    engines, columns) blocks of a window's (rows, columns) arrays that hold chased values: rows
    0..lim[e] for engine e's columns, so each block spans the engines still chasing."""
    ends = np.cumsum(cnt)
    out = []
    top = 0
    for lv in np.unique(lim).tolist():  # ascending
        a = int(np.searchsorted(-lim, -lv, side="right"))  # engines with lim >= lv
        out.append((top, lv + 1, a, int(ends[a - 1])))
        top = lv + 1
    return out


def banded_reduceat(ufunc: np.ufunc, X: np.ndarray, seg: np.ndarray, bands: list[tuple[int, int, int, int]],
                    rows: int) -> np.ndarray:
    """(rows, engines) ``ufunc.reduceat`` of X's columns by engine, over the chased blocks only
    (0 elsewhere)."""
    out = np.zeros((rows, seg.shape[0]), X.dtype)
    for r0, r1, a, c in bands:
        r1 = min(r1, rows)
        if r1 > r0:
            out[r0:r1, :a] = ufunc.reduceat(X[r0:r1, :c], seg[:a], axis=1)
    return out


def first_at_least(P: np.ndarray, cols: np.ndarray, target: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Per column ``cols[i]`` of P (non-decreasing down its rows 0..last[i]), the first row
    1 <= r <= last[i] with P[r] >= target[i] (last[i] + 1 if none): a binary search, log2(rows)
    gathers of len(cols)."""
    rows, n = P.shape
    flat = P.reshape(-1)
    lo = np.ones(cols.shape[0], np.int64)
    hi = last + 1
    while True:
        open_ = lo < hi
        if not open_.any():
            return lo
        mid = (lo + hi) // 2
        ge = flat[np.minimum(mid, rows - 1) * n + cols] >= target
        hi = np.where(open_ & ge, mid, hi)
        lo = np.where(open_ & ~ge, mid + 1, lo)


def context_max(Pw: np.ndarray, off: np.ndarray, ctx: np.ndarray, seg: np.ndarray, cnt: np.ndarray,
                reach: np.ndarray, gone: np.ndarray | None, dead: np.ndarray | None, X: np.ndarray
                ) -> np.ndarray:
    """float (W, A): longest context of each engine before each iteration of the window.

    Requests ``gone`` (columns) leave their engine at the iterations where ``dead`` (W, len(gone))
    is true. Only requests within ``reach`` (W x the engine's largest k)
    tokens of the engine's longest staying context can overtake it in W iterations (each
    iteration adds at most k+1 tokens to one and at least 1 to the leader), so the max runs over
    those few columns (plus the leaving ones, masked), not the whole window.
    """
    stay = ctx
    if gone is not None:
        stay = ctx.copy()
        stay[gone] = -1
    keep = ctx >= np.repeat(np.maximum.reduceat(stay, seg) - reach, cnt)
    if gone is not None:
        keep[gone] = True
    cand = np.flatnonzero(keep)
    if cand.shape[0] * 2 > ctx.shape[0]:
        np.add(Pw, off, out=X)
        if gone is not None:
            X[:, gone] = np.where(dead, -1, X[:, gone])
        return np.maximum.reduceat(X, seg, axis=1).astype(np.float64)
    Xc = Pw[:, cand] + off[cand]
    if gone is not None:
        at = np.searchsorted(cand, gone)
        Xc[:, at] = np.where(dead, -1, Xc[:, at])
    # Every engine keeps its own staying leader, so each segment start has a candidate.
    return np.maximum.reduceat(Xc, np.searchsorted(cand, seg), axis=1).astype(np.float64)


def price(cost: Any, valid: np.ndarray, n: np.ndarray, draft: np.ndarray, q_max: np.ndarray,
          c_sum: np.ndarray, c_max: np.ndarray, qc: np.ndarray) -> np.ndarray:
    """(W, A) seconds of the kept (iteration, engine) pairs, 0 elsewhere: one cost-model call over
    just the kept pairs (the model is elementwise, so each value is what a one-iteration call gives).
    Each feature is per engine (A,) or per pair (W, A)."""
    W, A = valid.shape
    vi = np.flatnonzero(valid)
    cols = vi % A

    def pick(x: np.ndarray) -> np.ndarray:
        return x[cols] if x.ndim == 1 else x.reshape(W * A).take(vi)

    nv = pick(n)
    dv = pick(draft)
    batch = IterationBatch(n=nv, q_sum=nv + dv, q_max=pick(q_max), c_sum=pick(c_sum).astype(np.float64),
                           c_max=pick(c_max), qc_sum=pick(qc).astype(np.float64), draft_tokens=dv)
    t = np.zeros(W * A)
    t[vi] = cost.iteration_time(batch)
    return t.reshape(W, A)
