"""The observable state a policy decides on, vectorized over the active requests of many engines.

One :class:`PolicyState` describes one decode iteration of one or more engines. The simulator
builds it for all engines at once (its kernel advances every engine's next iteration together);
the real backend builds it for its single engine. Per-request arrays have length ``n`` and are
ordered by engine (all requests of engine 0, then engine 1, ...); per-engine arrays have length
``n_engines``. Policies must stay vectorized (numpy over requests and engines, no Python loop
over requests): the simulator calls them once per kernel iteration for the whole cluster.

Drafter proposals are lazy: ``draft_conf`` (an ``(n, kmax)`` matrix of per-token probabilities
of the drafter's proposal, 0 beyond its end) is materialized only if a policy reads it, because
gathering it costs more than most policies' whole decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PolicyState:
    # --- per active request, shape (n,), ordered by engine ---------------------------------
    engine: np.ndarray
    """int32: engine index of each request, in [0, n_engines), non-decreasing."""
    request: np.ndarray
    """int64: a request id stable for the whole run (index into per-request policy memory)."""
    generated: np.ndarray
    """int64: response tokens generated so far."""
    prompt_len: np.ndarray
    """int64: prompt tokens."""
    predicted_len: np.ndarray
    """float64: predicted total response length from the prompt's history (nan when unknown)."""
    last_drafted: np.ndarray
    """int32: draft length this request used in its previous iteration (0 before any)."""
    last_accepted: np.ndarray
    """int32: draft tokens accepted in its previous iteration."""
    accept_ema: np.ndarray
    """float64: EMA of this request's per-token acceptance estimate (:func:`per_token_acceptance`
    of each iteration that drafted; nan before its first draft)."""
    # --- per engine, shape (n_engines,) -----------------------------------------------------
    batch_size: np.ndarray
    """int32: active requests of each engine in this iteration."""
    kv_used: np.ndarray
    """float64: fraction of each engine's KV-cache capacity in use."""
    iteration: np.ndarray
    """int64: iterations each engine has run in this RL step."""
    last_iter_time: np.ndarray
    """float64: seconds of each engine's previous iteration (0 before any)."""
    # --- scalars -------------------------------------------------------------------------
    kmax: int
    """largest draft length the drafter can propose (columns of ``draft_conf``)."""
    max_len: int
    """response-length cap of the workload."""
    step: int = 0
    """RL step index."""
    # --- lazy / privileged ------------------------------------------------------------------
    conf_fn: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    """Builds the ``(n, kmax)`` float32 proposal probabilities on first access of draft_conf."""
    match_len: np.ndarray | None = None
    """int: the true match length m_t of each request. Only the simulator fills it and only the
    non-deployable ``oracle`` policy may read it; the real backend leaves it None."""
    _conf: np.ndarray | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return int(self.engine.shape[0])

    @property
    def n_engines(self) -> int:
        return int(self.batch_size.shape[0])

    @property
    def draft_conf(self) -> np.ndarray:
        """float32 (n, kmax): probability of each proposed draft token; 0 past the proposal."""
        if self._conf is None:
            if self.conf_fn is None:
                # No confidence signal: the drafter always proposes kmax tokens of unknown quality.
                self._conf = np.full((self.n, self.kmax), np.nan, dtype=np.float32)
            else:
                self._conf = self.conf_fn()
        return self._conf

    @property
    def draft_len(self) -> np.ndarray:
        """int (n,): length of the drafter's proposal (kmax when no confidence signal)."""
        conf = self.draft_conf
        return np.where(np.isnan(conf), True, conf > 0).sum(axis=1)

    @property
    def engine_batch(self) -> np.ndarray:
        """int (n,): the batch size of each request's engine."""
        return self.batch_size[self.engine]

    def remaining_predicted(self) -> np.ndarray:
        """float (n,): predicted remaining tokens (nan when no history)."""
        return np.maximum(self.predicted_len - self.generated, 1.0)


@dataclass
class Feedback:
    """What happened in the iteration a policy decided on (for stateful policies)."""

    k: np.ndarray
    """int (n,): draft lengths actually used (the decision clipped to the proposal)."""
    accepted: np.ndarray
    """int (n,): draft tokens accepted."""
    iter_time: np.ndarray
    """float (n_engines,): seconds each engine's iteration took."""


def per_token_acceptance(k: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Per-token acceptance estimate of one iteration: a / (a + [a < k]) (for k > 0).

    Accepting a of k drafts is a successes then one failure (none if a = k): the geometric
    maximum-likelihood rate. The plain ratio a / k under-estimates it (4 drafts, 2 accepted: 0.5
    instead of 2/3), yet policies read ``accept_ema`` as a per-token rate alpha. The simulator and
    the real engine both use this function, so policies see the same signal in both.
    """
    k = np.asarray(k)
    a = np.asarray(a)
    return a / np.maximum(a + (a < k), 1)


ACCEPT_EMA_WEIGHT = 0.3
"""Weight of the newest iteration in ``accept_ema`` (the simulator and the real engine share it)."""


def update_accept_ema(ema: np.ndarray, k: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``accept_ema`` after an iteration that drafted ``k`` and accepted ``a`` per request
    (unchanged where k = 0; the first estimate where it was nan)."""
    ema = np.asarray(ema, dtype=np.float64)
    rate = per_token_acceptance(k, a)
    upd = np.where(np.isnan(ema), rate, ACCEPT_EMA_WEIGHT * rate + (1.0 - ACCEPT_EMA_WEIGHT) * ema)
    return np.where(np.asarray(k) > 0, upd, ema)
