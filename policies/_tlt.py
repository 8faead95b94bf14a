"""TLT: speculation only in the long tail, draft budget chosen by a bucketed epsilon-greedy bandit."""

from __future__ import annotations

import dataclasses

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.policies._base import Policy, register_policy
from specroll.policies._state import Feedback, PolicyState
from specroll.policies._tuner import tunable


@register_policy("tlt")
class TLTPolicy(Policy):
    """TLT (Hu et al., "Taming the Long-Tail", arXiv 2511.16665, adaptive rollout engine + BEG-MAB).

    Per engine: speculation stays off until the engine's batch has been <= ``batch_threshold``
    for ``patience`` consecutive iterations (the batch only shrinks within a step, so it then
    stays on). Then, each iteration, a bucketed epsilon-greedy bandit picks one draft budget
    among ``budgets`` for the engine's batch-size bucket (``bucket_edges``: bucket i holds
    batches <= edges[i]): an untried arm first, else with probability ``epsilon`` a random arm,
    else the arm with the best mean reward. The reward is the engine's tokens produced
    (accepted drafts + one per request, i.e. accepted per request x batch) per second of the
    iteration (``observe``). Statistics are per engine and survive ``reset`` (a new RL step)
    unless the number of engines changes; the RNG is seeded (``seed``) so runs are reproducible.
    Defaults are ours: budgets and buckets of the sizes TLT's strategy pool spans.
    """

    @dataclasses.dataclass
    class Params:
        batch_threshold: int = dataclasses.field(default=32, metadata=tunable(1, 128, log=True))
        patience: int = dataclasses.field(default=3, metadata=tunable(1, 20))
        budgets: tuple = (1, 2, 4, 6, 8)
        bucket_edges: tuple = (1, 2, 4, 8, 16, 32)
        epsilon: float = dataclasses.field(default=0.1, metadata=tunable(0.0, 0.5))
        seed: int = 0

    def validate(self) -> None:
        p = self.params
        p.budgets = tuple(int(b) for b in p.budgets)
        p.bucket_edges = tuple(int(b) for b in p.bucket_edges)
        if not p.budgets or min(p.budgets) < 0:
            raise SpecrollError(f"budgets must be a non-empty list of draft lengths >= 0, got {p.budgets}",
                                field="budgets")
        if not p.bucket_edges or list(p.bucket_edges) != sorted(set(p.bucket_edges)):
            raise SpecrollError(f"bucket_edges must increase strictly, got {p.bucket_edges}",
                                field="bucket_edges")
        if not 0.0 <= p.epsilon <= 1.0 or p.patience < 1 or p.batch_threshold < 0:
            raise SpecrollError("need 0 <= epsilon <= 1, patience >= 1, batch_threshold >= 0",
                                field="epsilon")
        self._arms = np.asarray(p.budgets, dtype=np.int32)
        self._edges = np.asarray(p.bucket_edges, dtype=np.int64)
        self._rng = np.random.default_rng(p.seed)
        self._n_engines = -1

    def _init(self, n_engines: int) -> None:
        shape = (n_engines, self._edges.size, self._arms.size)
        self._n_engines = n_engines
        self.reward_sum = np.zeros(shape)
        self.pulls = np.zeros(shape, dtype=np.int64)
        self._new_step()

    def _new_step(self) -> None:
        E = self._n_engines
        self.small_run = np.zeros(E, dtype=np.int64)
        self.active = np.zeros(E, dtype=bool)
        self._bucket = np.zeros(E, dtype=np.int64)
        self._arm = np.zeros(E, dtype=np.int64)

    def reset(self, n_engines: int) -> None:
        if n_engines != self._n_engines:
            self._init(n_engines)
        else:
            self._new_step()

    def decide(self, state: PolicyState) -> np.ndarray:
        E = state.n_engines
        if self._n_engines != E:
            self._init(E)
        b = state.batch_size
        small = (b <= self.params.batch_threshold) & (b > 0)
        self.small_run = np.where(small, self.small_run + 1, 0)
        self.active |= self.small_run >= self.params.patience
        bucket = np.minimum(np.searchsorted(self._edges, b, side="left"), self._edges.size - 1)
        rows = np.arange(E)
        pulls, sums = self.pulls[rows, bucket], self.reward_sum[rows, bucket]  # (E, arms)
        mean = np.where(pulls > 0, sums / np.maximum(pulls, 1), np.inf)  # untried arms first
        explore = self._rng.random(E) < self.params.epsilon
        random_arm = self._rng.integers(0, self._arms.size, E)
        arm = np.where(explore, random_arm, np.argmax(mean, axis=1))
        self._bucket, self._arm = bucket, arm
        k_engine = np.where(self.active, self._arms[arm], 0)
        return np.minimum(k_engine[state.engine], state.kmax).astype(np.int32)

    def observe(self, state: PolicyState, feedback: Feedback) -> None:
        E = state.n_engines
        if self._n_engines != E:
            return
        tokens = np.bincount(state.engine, weights=feedback.accepted + 1.0, minlength=E)
        t = np.asarray(feedback.iter_time, dtype=np.float64)
        learn = self.active & (t > 0)
        if not learn.any():
            return
        e = np.flatnonzero(learn)
        flat = np.ravel_multi_index((e, self._bucket[e], self._arm[e]), self.pulls.shape)
        self.pulls.ravel()[flat] += 1  # (engine, bucket, arm) cells are distinct: one per engine
        self.reward_sum.ravel()[flat] += tokens[e] / t[e]
