"""The MDP-optimal draft length for a cost model and an acceptance model (table built once)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from specroll.calibration import IterationBatch
from specroll.core.errors import SpecrollError
from specroll.policies._base import Policy, register_policy
from specroll.policies._state import PolicyState
from specroll.policies._tuner import tunable

CostFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""cost(b, K) -> seconds of one iteration of b requests that each verify a K-token draft."""

_TABLES: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def batch_grid(max_batch: int) -> np.ndarray:
    """Batch sizes the table covers: 1..8, then powers of two and their 1.5x midpoints."""
    g = set(range(1, min(max_batch, 8) + 1))
    p = 8
    while p <= max_batch:
        g.update(x for x in (p, int(p * 1.5)) if x <= max_batch)
        p *= 2
    g.add(max_batch)
    return np.array(sorted(g), dtype=np.int64)


def profile_key(profile: Any) -> str | None:
    """A profile's identity for table caches: the digest of its JSON form (two profiles that price
    the same way share tables, whatever their file names); None for a cost object without one."""
    if not hasattr(profile, "to_dict"):
        return None
    cached = getattr(profile, "_specroll_key", None)
    if cached is None:
        blob = json.dumps(profile.to_dict(), sort_keys=True, default=str).encode()
        cached = hashlib.sha256(blob).hexdigest()
        with contextlib.suppress(AttributeError):  # a frozen object: recompute next time
            profile._specroll_key = cached
    return cached


def unbound(name: str) -> SpecrollError:
    return SpecrollError(f"policy '{name}' prices its decisions with a cost profile and was given none",
                         field="policy", fix="run it through the simulator or the real backend (they "
                         "pass the run's profile), or call policy.bind_cost(profile)")


def profile_cost(profile: Any, ctx_len: int) -> CostFn:
    """cost(b, K) from a CostProfile: b requests of context ``ctx_len``, each verifying K + 1 tokens."""

    def cost(b: np.ndarray, k: np.ndarray) -> np.ndarray:
        b, k = np.broadcast_arrays(np.asarray(b, np.float64), np.asarray(k, np.float64))
        b, k = b.ravel(), k.ravel()
        q = k + 1.0
        batch = IterationBatch(n=b, q_sum=b * q, q_max=q, c_sum=b * ctx_len, c_max=np.full_like(b, ctx_len),
                               qc_sum=b * q * (ctx_len + (q + 1.0) / 2.0), draft_tokens=b * k)
        return profile.iteration_time(batch)

    return cost


def solve_mdp(tau: np.ndarray, alphas: np.ndarray, persistence: float, *, tol: float = 1e-10,
              max_rounds: int = 50, max_sweeps: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Optimal draft length per (batch size, confidence bucket); returns (table (B, C), g (B,)).

    A semi-Markov decision process for one request on an engine of batch b (b is exogenous:
    requests leave at their own pace). State: the confidence bucket c of the drafter's current
    proposal; bucket c's drafts are accepted token by token with probability ``alphas[c]``.
    Action: draft K in 0..Kmax. One iteration costs the request its share of the engine's time,
    ``tau[b, K] = cost(b, K) / b``, and yields r(c, K) = sum_{j<=K} alpha_c^j tokens (accepted +
    the target's own). The text then advances A + 1 tokens (A = accepted), and the bucket
    evolves per token as a sticky chain: stay with ``persistence``, else redraw uniformly. So
    drafting more moves further along the text, and the transition depends on the action.

    Objective: least long-run seconds per token, g = E[time] / E[tokens]. Dinkelbach's method:
    for the current g solve the average-cost MDP with cost tau - g r by relative value
    iteration, take its policy's ratio as the next g; stop when the policy repeats.
    """
    B, K1 = tau.shape
    C = alphas.size
    a = alphas[:, None]
    ks = np.arange(K1)
    r = np.cumsum(a ** ks[None, :], axis=1)  # (C, K1)
    # P(A = j | c, K): alpha^j (1 - alpha) for j < K, alpha^K at j = K.
    j = ks[None, None, :]
    kk = ks[None, :, None]
    a3 = a[:, :, None]
    pa = np.where(j < kk, a3**j * (1 - a3), np.where(j == kk, a3**j, 0.0))
    step = persistence * np.eye(C) + (1.0 - persistence) / C
    powers = np.stack([np.linalg.matrix_power(step, m + 1) for m in range(K1)])  # advance j+1 tokens
    trans = np.einsum("ckj,jcd->ckd", pa, powers)  # (C, K1, C)
    g = tau[:, 0] / r[:, 0].mean()
    policy = np.zeros((B, C), dtype=np.int64)
    rows = np.arange(B)[:, None]
    for _ in range(max_rounds):
        cost = tau[:, None, :] - g[:, None, None] * r[None, :, :]  # (B, C, K1)
        h = np.zeros((B, C))
        for _ in range(max_sweeps):
            q = cost + np.einsum("ckd,bd->bck", trans, h)
            hn = q.min(axis=2)
            hn -= hn[:, :1]
            done = np.max(np.abs(hn - h)) < tol
            h = hn
            if done:
                break
        # Ties go to the smaller draft (argmin takes the first); round off noise first.
        new = np.argmin(np.round(q / max(np.abs(q).max(), 1e-300), 12), axis=2)
        chain = trans[np.arange(C)[None, :], new]  # (B, C, C)
        lhs = np.swapaxes(chain, 1, 2) - np.eye(C)
        lhs[:, -1, :] = 1.0
        rhs = np.zeros((B, C))
        rhs[:, -1] = 1.0
        pi = np.linalg.solve(lhs, rhs[..., None])[..., 0]
        g_new = (pi * tau[rows, new]).sum(1) / (pi * r[np.arange(C)[None, :], new]).sum(1)
        stable = np.array_equal(new, policy)
        policy, g = new, g_new
        if stable:
            break
    return policy.astype(np.int32), g


def threshold_structure(table: np.ndarray) -> dict[str, Any]:
    """Check the optimal table's threshold structure (rows: batch sizes up, cols: confidence up).

    Returns ``{"ok", "nondecreasing_in_confidence", "nonincreasing_in_batch", "violations"}``
    where violations lists (axis, batch index, bucket index) of each step that breaks it.
    """
    dc = np.diff(table, axis=1)
    db = np.diff(table, axis=0)
    viol = [("confidence", int(i), int(j)) for i, j in zip(*np.nonzero(dc < 0), strict=True)]
    viol += [("batch", int(i), int(j)) for i, j in zip(*np.nonzero(db > 0), strict=True)]
    return {"ok": not viol, "nondecreasing_in_confidence": bool((dc >= 0).all()),
            "nonincreasing_in_batch": bool((db <= 0).all()), "violations": viol}


@register_policy("mdp")
class MDPPolicy(Policy):
    """The optimal draft length for a cost model and an acceptance model (:func:`solve_mdp`).

    Cost: the run's CostProfile, handed over by the simulator or the real backend
    (:meth:`bind_cost`; requests of context ``ctx_len``), or a ``cost_fn(b, K)`` given to the
    constructor (tests, studies; not saved in best_policy.json). Acceptance: the drafter's
    first-token confidence picks a bucket (``conf_edges``); bucket i accepts each token with
    ``bucket_alpha[i]`` (default: the bucket's midpoint, i.e. a calibrated drafter). Without a
    confidence signal the request's acceptance EMA (else ``alpha``) picks the bucket. The table over
    (batch size, bucket) is built once per distinct configuration and cached; decide() is a
    lookup (batch sizes between grid points use the grid point below).
    """

    uses_confidence = True
    needs_cost = True

    @dataclasses.dataclass
    class Params:
        # The tuner searches the two modelling choices of the cost and acceptance models: the one
        # context length the cost is priced at (real contexts span the prompt to the cap) and how
        # sticky the confidence bucket is from token to token.
        ctx_len: int = dataclasses.field(default=2048, metadata=tunable(256, 16384, log=True))
        k_max: int = 16
        max_batch: int = 256
        conf_edges: tuple = (0.2, 0.4, 0.6, 0.8, 0.9, 0.95)
        bucket_alpha: tuple = ()
        alpha: float = 0.7
        persistence: float = dataclasses.field(default=0.9, metadata=tunable(0.0, 0.99))

    def __init__(self, cost_fn: CostFn | None = None, **params: Any) -> None:
        self._cost_fn = cost_fn
        self.table: np.ndarray | None = None
        super().__init__(**params)
        if cost_fn is not None:
            self._build(cost_fn, None)

    def bind_cost(self, profile: Any) -> None:
        if self._cost_fn is None:
            self._build(profile_cost(profile, int(self.params.ctx_len)), profile_key(profile))

    def validate(self) -> None:
        p = self.params
        p.conf_edges = tuple(float(x) for x in p.conf_edges)
        edges = np.array((0.0, *p.conf_edges, 1.0))
        if np.any(np.diff(edges) <= 0):
            raise SpecrollError(f"conf_edges must increase strictly inside (0, 1), got {p.conf_edges}",
                                field="conf_edges")
        if not p.bucket_alpha:
            p.bucket_alpha = tuple(float(x) for x in 0.5 * (edges[1:] + edges[:-1]))
        p.bucket_alpha = tuple(float(x) for x in p.bucket_alpha)
        if len(p.bucket_alpha) != edges.size - 1 or not all(0 <= x < 1 for x in p.bucket_alpha):
            raise SpecrollError(f"bucket_alpha needs {edges.size - 1} values in [0, 1)", field="bucket_alpha")
        if not 0.0 <= p.persistence < 1.0 or not 0.0 <= p.alpha <= 1.0:
            raise SpecrollError("need 0 <= persistence < 1 and 0 <= alpha <= 1", field="persistence")
        if p.k_max < 0 or p.max_batch < 1 or p.ctx_len < 0:
            raise SpecrollError("need k_max >= 0, max_batch >= 1, ctx_len >= 0", field="k_max")

    def _build(self, cost: CostFn, profile: str | None) -> None:
        """The table for ``cost``; cached across policies by (profile, parameters)."""
        p = self.params
        self.batches = batch_grid(int(p.max_batch))
        key = None
        if profile is not None:
            key = (profile, p.ctx_len, p.k_max, p.max_batch, p.conf_edges, p.bucket_alpha, p.persistence)
        if key is not None and key in _TABLES:
            self.table, self.g = _TABLES[key]
            return
        b = self.batches[:, None].astype(np.float64)
        k = np.arange(int(p.k_max) + 1)[None, :].astype(np.float64)
        tau = np.asarray(cost(np.broadcast_to(b, (b.size, k.size)), np.broadcast_to(k, (b.size, k.size))),
                         dtype=np.float64).reshape(b.size, k.size) / b
        self.table, self.g = solve_mdp(tau, np.asarray(p.bucket_alpha), float(p.persistence))
        if key is not None:
            _TABLES[key] = (self.table, self.g)

    def structure(self) -> dict[str, Any]:
        """:func:`threshold_structure` of this policy's table."""
        return threshold_structure(self.table)

    def decide(self, state: PolicyState) -> np.ndarray:
        p = self.params
        if self.table is None:
            raise unbound(self.name)
        conf = state.draft_conf[:, 0] if state.kmax > 0 else np.full(state.n, np.nan)
        signal = np.where(np.isnan(conf), state.accept_ema, conf)
        signal = np.where(np.isnan(signal), p.alpha, signal)
        bucket = np.searchsorted(np.asarray(p.conf_edges), signal, side="right")
        bi = np.maximum(np.searchsorted(self.batches, state.batch_size, side="right") - 1, 0)
        return np.minimum(self.table[bi[state.engine], bucket], state.kmax).astype(np.int32)
