"""The generation engine: one lean loop of batched, lossless speculative decoding.

State of a request between iterations: its cache slot holds ``prompt + out[:-1]`` (``cached``
tokens) and ``out[-1]`` is the *pending* token, sampled but not yet fed to the model. An
iteration feeds ``[pending, d_1..d_k]`` at position ``cached`` for every active request in one
forward (rows right-padded to the longest), samples the target's own token at every query
position with the position-keyed sampler, and accepts the longest draft prefix equal to those
samples plus the target's next token. Because the token at response position t is a function of
(seed, key, t, logits) only, the output equals plain autoregressive decoding whatever the policy
drafts (docs/design.md §1). Rejected drafts and padding need no cache clean-up: their K/V land past
the row's real length and are overwritten before anything attends to them.

The policy sees this engine's :class:`PolicyState` each iteration and its :class:`Feedback`
after it; the drafter sees the request's prompt and every accepted token.

Beyond that chain of per-request CPU drafts (docs/systems/drafters.md):

- tree drafters (``tree_width`` > 1, ``propose_tree``: ``stand``) are verified as token trees
  when the model takes tree masks (real_backend/_tree.py), else by their most probable branch;
- model drafters (``batched = True``: ``layerskip``) draft for every active request at once with
  partial forwards of the model over the engine's own cache (real_backend/_model_drafter.py);
- the acceptance rule is pluggable (real_backend/_lossy.py): ``exact`` (lossless, the default)
  or a lossy one (``lenient``, ``judge``, ``ead``), whose accepted tokens that differ from the
  target's own keyed sample are counted per iteration as ``lossy_tokens``.
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from specroll.policies import Feedback, Policy, PolicyState, tree_conf, update_accept_ema
from specroll.real_backend._lossy import AcceptRule, Verify
from specroll.real_backend._tree import accept_tree, build_tree, move_accepted_kv
from specroll.real_backend._workload import RolloutRequest


@dataclass
class RolloutOutput:
    """One finished rollout."""

    request: RolloutRequest
    tokens: list[int]
    finished: bool
    """True = ended on EOS (included in ``tokens``); False = hit the max-new-tokens cap."""


@dataclass
class StepOutput:
    """Everything one RL step produced on this engine."""

    rollouts: list[RolloutOutput]
    iterations: list[dict[str, Any]]
    """one record per forward (phase ``prefill`` or ``decode``), in order."""
    decisions: list[dict[str, Any]]
    """one record per request per decode iteration: rid, generated (= response position of the
    first new token), k (draft length used), accepted (draft tokens kept)."""
    wall_s: float


@dataclass
class _Active:
    req: RolloutRequest
    slot: int
    out: list[int]
    predicted: float
    last_drafted: int = 0
    last_accepted: int = 0
    accept_ema: float = float("nan")
    proposal: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    branches: list[tuple[np.ndarray, np.ndarray]] | None = field(default=None, repr=False)

    @property
    def cached(self) -> int:
        return len(self.req.prompt_tokens) + len(self.out) - 1


Sampler = Callable[..., torch.Tensor]


class Engine:
    """Batched speculative decoding of a model with a static KV cache, one slot per request.

    ``model(tokens, slots, start, cache) -> logits`` follows the real_backend model contract;
    ``sampler`` is :func:`real_backend.keyed_sample` (any function with its signature works).
    ``forward`` (optional) replaces the plain model call, e.g. by a CUDA-graph step pool.
    ``accept`` is the acceptance rule (default: the lossless exact match). ``trees`` verifies tree
    drafters' trees (default: when the model takes tree masks, see real_backend/_model.py).
    """

    def __init__(self, model: torch.nn.Module, cache: Any, *, max_batch: int, max_new_tokens: int,
                 eos_ids: Sequence[int], seed: int, temperature: float = 0.0, top_p: float = 1.0,
                 sampler: Sampler | None = None, prefill_rows: int = 8,
                 forward: Callable[..., torch.Tensor] | None = None, accept: AcceptRule | None = None,
                 trees: bool | None = None) -> None:
        if sampler is None:
            from specroll.real_backend._sampling import keyed_sample as sampler
        self.model = model
        self.cache = cache
        self.max_batch = int(max_batch)
        self.max_new_tokens = int(max_new_tokens)
        self.eos = np.asarray(sorted(set(int(e) for e in eos_ids)), dtype=np.int64)
        self.seed = int(seed)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.sampler = sampler
        self.prefill_rows = max(1, int(prefill_rows))
        self._forward = forward or (lambda tokens, slots, start: model(tokens, slots, start, cache))
        # The plain model returns only the logits a prefill samples (``last``); a replacement forward
        # (the CUDA-graph pool) returns every position's, and the engine picks the last itself.
        self._plain = forward is None and "last" in _parameters(model)
        self.accept = accept or AcceptRule()
        self.trees = supports_trees(model, cache) if trees is None else bool(trees)
        self.device = next(iter(model.parameters()), torch.empty(0)).device
        self.max_ctx = int(_cache_capacity(cache))
        self.n_slots = int(_cache_slots(cache))
        if self.n_slots < self.max_batch:
            raise ValueError(f"cache has {self.n_slots} slots < max_batch {self.max_batch}")

    # ------------------------------------------------------------------------------------
    def run_step(self, requests: Sequence[RolloutRequest], policy: Policy, drafter: Any, *,
                 step: int = 0, predicted_len: Sequence[float] | None = None,
                 on_tokens: Callable[[int], None] | None = None) -> StepOutput:
        """Generate every request of one RL step to EOS or the cap; return outputs and records."""
        kmax = int(drafter.kmax)
        room = kmax * self.tree_width(drafter)  # verify nodes beyond the pending token
        if self.tree_width(drafter) > 1 and self.accept.is_lossy:
            raise ValueError("tree verification takes the exact rule only (lossy rules verify chains)")
        for r in requests:
            need = len(r.prompt_tokens) + self.max_new_tokens + room
            if need > self.max_ctx:
                raise ValueError(f"request {r.rid}: prompt {len(r.prompt_tokens)} + max_new_tokens "
                                 f"{self.max_new_tokens} + draft room {room} exceeds the cache "
                                 f"({self.max_ctx})")
        if getattr(drafter, "batched", False):
            drafter.bind(self)
        pred = (np.full(len(requests), np.nan) if predicted_len is None
                else np.asarray(predicted_len, dtype=np.float64))
        queue = deque(zip(requests, pred))
        free = list(range(self.max_batch))[::-1]
        active: list[_Active] = []
        done: dict[int, RolloutOutput] = {}
        iterations: list[dict[str, Any]] = []
        decisions: list[dict[str, Any]] = []
        policy.reset(1)
        iteration = 0
        last_time = 0.0
        t_step = time.perf_counter()
        while queue or active:
            # Admission: fill free slots from the queue, prefill the newcomers (in row chunks).
            admitted: list[_Active] = []
            while queue and free:
                req, p = queue.popleft()
                admitted.append(_Active(req, free.pop(), [], float(p)))
            for lo in range(0, len(admitted), self.prefill_rows):
                chunk = admitted[lo:lo + self.prefill_rows]
                rec = self._prefill(chunk, drafter, step)
                iterations.append(rec)
                for a in chunk:
                    if on_tokens:
                        on_tokens(1)
                    if self._finished(a):
                        self._retire(a, drafter, free, done)
                    else:
                        active.append(a)
            if not active:
                continue
            rec, dec, last_time = self._decode(active, policy, drafter, kmax, step, iteration, last_time)
            iterations.append(rec)
            decisions.extend(dec)
            if on_tokens:
                on_tokens(int(rec["new_tokens"]))
            iteration += 1
            still = []
            for a in active:
                if self._finished(a):
                    self._retire(a, drafter, free, done)
                else:
                    still.append(a)
            active = still
        wall = time.perf_counter() - t_step
        return StepOutput([done[r.rid] for r in requests], iterations, decisions, wall)

    # ------------------------------------------------------------------------------------
    def _prefill(self, chunk: list[_Active], drafter: Any, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        lens = [len(a.req.prompt_tokens) for a in chunk]
        width = max(lens)
        tokens = np.zeros((len(chunk), width), dtype=np.int64)
        for i, a in enumerate(chunk):
            tokens[i, :lens[i]] = a.req.prompt_tokens
            drafter.begin(a.req.rid, a.req.prompt_id, np.asarray(a.req.prompt_tokens, dtype=np.int64),
                          **sample_kw(drafter, a.req.sample))
        logits, fwd = self._run(tokens, [a.slot for a in chunk], [0] * len(chunk),
                                last=np.asarray(lens, dtype=np.int64) - 1)
        first = self._sample(logits, [a.req.key for a in chunk], np.zeros((len(chunk), 1)))
        for i, a in enumerate(chunk):
            a.out.append(int(first[i, 0]))
            drafter.extend(a.req.rid, np.asarray(a.out, dtype=np.int64))
        wall = time.perf_counter() - t0
        q = np.asarray(lens, dtype=np.float64)
        return _record("prefill", step, -1, q, np.zeros_like(q), width, 0, 0, len(chunk), wall, fwd)

    def _decode(self, active: list[_Active], policy: Policy, drafter: Any, kmax: int, step: int,
                iteration: int, last_time: float) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
        t0 = time.perf_counter()
        n = len(active)
        tree = self.tree_width(drafter) > 1
        batched = bool(getattr(drafter, "batched", False))
        for a in active:
            a.proposal = a.branches = None
        generated = np.array([len(a.out) for a in active], dtype=np.int64)
        cached = np.array([a.cached for a in active], dtype=np.int64)
        draft_wall = [0.0]

        def model_draft(k: np.ndarray) -> None:  # batched: one set of partial forwards for all rows
            t1 = time.perf_counter()
            toks, probs, lens = drafter.draft(
                [a.req.rid for a in active], np.array([a.out[-1] for a in active], dtype=np.int64),
                np.array([a.slot for a in active], dtype=np.int64), cached,
                np.array([a.req.key for a in active], dtype=np.int64), generated, k,
                stop=self.accept.draft_stop)
            for i, a in enumerate(active):
                a.proposal = (toks[i, :lens[i]], probs[i, :lens[i]])
            draft_wall[0] += time.perf_counter() - t1

        def proposal(a: _Active) -> tuple[np.ndarray, np.ndarray]:
            if a.proposal is None:
                if tree:
                    a.branches = [(np.asarray(t, dtype=np.int64)[:kmax],
                                   np.asarray(p, dtype=np.float32)[:kmax])
                                  for t, p in drafter.propose_tree(a.req.rid)]
                    c = tree_conf(a.branches)
                    a.proposal = (np.zeros(len(c), dtype=np.int64), c)  # depth and conditionals
                else:
                    toks, probs = drafter.propose(a.req.rid)
                    a.proposal = (np.asarray(toks, dtype=np.int64)[:kmax],
                                  np.asarray(probs, dtype=np.float32)[:kmax])
            return a.proposal

        def conf() -> np.ndarray:
            if batched and active[0].proposal is None:
                model_draft(np.full(n, kmax, dtype=np.int64))
            m = np.zeros((n, kmax), dtype=np.float32)
            for i, a in enumerate(active):
                p = proposal(a)[1]
                m[i, :len(p)] = p
            return m

        state = PolicyState(
            engine=np.zeros(n, dtype=np.int32),
            request=np.array([a.req.rid for a in active], dtype=np.int64),
            generated=generated,
            prompt_len=np.array([len(a.req.prompt_tokens) for a in active], dtype=np.int64),
            predicted_len=np.array([a.predicted for a in active], dtype=np.float64),
            last_drafted=np.array([a.last_drafted for a in active], dtype=np.int32),
            last_accepted=np.array([a.last_accepted for a in active], dtype=np.int32),
            accept_ema=np.array([a.accept_ema for a in active], dtype=np.float64),
            batch_size=np.array([n], dtype=np.int32),
            kv_used=np.array([(cached.sum() + n) / (self.n_slots * self.max_ctx)], dtype=np.float64),
            iteration=np.array([iteration], dtype=np.int64),
            last_iter_time=np.array([last_time], dtype=np.float64),
            kmax=kmax, max_len=self.max_new_tokens, step=step, conf_fn=conf)
        want = np.asarray(policy.decide(state), dtype=np.int64).reshape(n)
        # Clip to the proposal and so that the accepted run (k + 1 tokens) never passes the cap.
        room = self.max_new_tokens - generated - 1
        k = np.minimum(np.minimum(np.maximum(want, 0), np.maximum(room, 0)), kmax)
        if batched and active[0].proposal is None and k.any():
            model_draft(k)
        drafts = np.zeros((n, kmax), dtype=np.int64)
        for i, a in enumerate(active):
            if k[i] > 0:
                toks = proposal(a)[0]
                k[i] = min(k[i], len(toks))
                drafts[i, :k[i]] = toks[:k[i]]
        keys = np.array([a.req.key for a in active], dtype=np.int64)
        if tree:
            out = self._verify_tree(active, k, cached, generated, keys)
        else:
            out = self._verify_chain(active, k, drafts, cached, generated, keys)
        news, acc, lossy, q, fwd = out
        kept_acc = np.zeros(n, dtype=np.int64)
        kept_lossy = np.zeros(n, dtype=np.int64)
        new_total = 0
        decisions = []
        for i, a in enumerate(active):
            new, lossy_i = news[i], lossy[i]
            stop = np.flatnonzero(np.isin(new, self.eos))
            if stop.size:
                new = new[:stop[0] + 1]
            # Every iteration emits accepted + 1 tokens: when EOS cuts the run short, the last
            # token kept counts as the target's own (as in the simulator and the m_t <= L-1-t
            # semantics of match-length traces), whether or not a draft proposed it.
            kept_acc[i] = min(int(acc[i]), len(new) - 1)
            kept_lossy[i] = int(lossy_i[:len(new)].sum())
            a.out.extend(new)
            drafter.extend(a.req.rid, np.asarray(new, dtype=np.int64))
            new_total += len(new)
            a.last_drafted, a.last_accepted = int(k[i]), int(kept_acc[i])
            a.accept_ema = float(update_accept_ema(a.accept_ema, k[i], kept_acc[i]))
            decisions.append({"step": step, "iteration": iteration, "rid": a.req.rid,
                              "generated": int(generated[i]), "k": int(k[i]),
                              "accepted": int(kept_acc[i]), "lossy": int(kept_lossy[i])})
        wall = time.perf_counter() - t0
        policy.observe(state, Feedback(k=k.astype(np.int32), accepted=kept_acc.astype(np.int32),
                                       iter_time=np.array([wall])))
        proposed = sum(len(a.proposal[0]) for a in active if a.proposal is not None)
        if tree:
            proposed = sum(len(t) for a in active for t, _ in (a.branches or ()))
        rec = _record("decode", step, iteration, q.astype(np.float64), cached.astype(np.float64),
                      int(q.max()), int(k.sum()), int(kept_acc.sum()), new_total, wall, fwd)
        rec["draft_tokens"] = proposed
        rec["lossy_tokens"] = int(kept_lossy.sum())
        rec["draft_wall_s"] = draft_wall[0]
        return rec, decisions, wall

    def _verify_chain(self, active: list[_Active], k: np.ndarray, drafts: np.ndarray, cached: np.ndarray,
                      generated: np.ndarray, keys: np.ndarray) -> tuple[list[list[int]], np.ndarray,
                                                                        list[np.ndarray], np.ndarray, float]:
        """Feed [pending, d_1..d_k] per row; keep the longest prefix the rule accepts + the target's
        next token. Returns (tokens per row, accepted, lossy flags per kept token, q, forward s)."""
        n = len(active)
        q = k + 1
        q_max = int(q.max())
        tokens = np.zeros((n, q_max), dtype=np.int64)
        tokens[:, 0] = [a.out[-1] for a in active]
        tokens[:, 1:] = drafts[:, :q_max - 1]
        logits, fwd = self._run(tokens, [a.slot for a in active], cached)
        positions = generated[:, None] + np.arange(q_max)[None, :]
        target = self._sample(logits, keys, positions)
        cols = np.arange(q_max - 1)[None, :]
        if q_max > 1:
            ok = self.accept.accept(Verify(logits, drafts[:, :q_max - 1], target, k, keys, positions,
                                           self.seed, self.temperature, self.top_p))
            acc = np.cumprod(ok & (cols < k[:, None]), axis=1).sum(axis=1)
        else:
            acc = np.zeros(n, dtype=np.int64)
        news, lossy = [], []
        for i in range(n):
            a_i = int(acc[i])
            # Accepted drafts, then the target's own token (with the exact rule drafts[:a] equal
            # the target's samples, so this is target[:a + 1]).
            new = drafts[i, :a_i].tolist() + [int(target[i, a_i])]
            news.append(new)
            lossy.append(np.asarray(new) != target[i, :a_i + 1])
        return news, acc, lossy, q, fwd

    def _verify_tree(self, active: list[_Active], k: np.ndarray, cached: np.ndarray, generated: np.ndarray,
                     keys: np.ndarray) -> tuple[list[list[int]], np.ndarray, list[np.ndarray],
                                                np.ndarray, float]:
        """One forward over every row's token tree (real_backend/_tree.py); exact acceptance."""
        n = len(active)
        branches = [[t for t, _ in (a.branches or ())] if k[i] > 0 else [] for i, a in enumerate(active)]
        tb = build_tree([a.out[-1] for a in active], branches, k)
        logits, fwd = self._run(tb.tokens, [a.slot for a in active], cached,
                                positions=cached[:, None] + tb.depth, tree=tb.mask)
        target = self._sample(logits, keys, generated[:, None] + tb.depth)
        acc = np.zeros(n, dtype=np.int64)
        news, lossy = [], []
        for i, (b, a_i, node) in enumerate(accept_tree(tb, target)):
            acc[i] = a_i
            new = (tb.branches[i][b][:a_i].tolist() if a_i else []) + [int(target[i, node])]
            news.append(new)
            lossy.append(np.zeros(len(new), dtype=bool))
            if a_i:
                move_accepted_kv(self.cache, active[i].slot, int(cached[i]), tb.starts[i][b], a_i)
        return news, acc, lossy, tb.q, fwd

    def tree_width(self, drafter: Any) -> int:
        """Branches verified per request: the drafter's ``tree_width`` when trees are verified."""
        w = int(getattr(drafter, "tree_width", 1))
        return w if w > 1 and self.trees and hasattr(drafter, "propose_tree") else 1

    # ------------------------------------------------------------------------------------
    def _run(self, tokens: np.ndarray, slots: Sequence[int], start: Sequence[int],
             positions: np.ndarray | None = None, tree: np.ndarray | None = None,
             last: np.ndarray | None = None) -> tuple[torch.Tensor, float]:
        """The forward's logits [B, Q, V] and its seconds; with ``last`` [B], the logits of query
        column ``last[b]`` of each row only, [B, 1, V]."""
        dev = self.device
        t = torch.as_tensor(tokens, dtype=torch.int64, device=dev)
        s = torch.as_tensor(np.asarray(slots), dtype=torch.int64, device=dev)
        st = torch.as_tensor(np.asarray(start), dtype=torch.int64, device=dev)
        forward = self._forward
        if last is not None:
            last_t = torch.as_tensor(last, dtype=torch.int64, device=dev)
            forward = (partial(self.model, cache=self.cache, last=last_t) if self._plain else
                       lambda t, s, st, f=self._forward: f(t, s, st)[torch.arange(len(t)), last_t][:, None])
        if tree is not None:  # trees run eagerly (the graph pool captures chains)
            pos_t = torch.as_tensor(positions, dtype=torch.int64, device=dev)
            tree_t = torch.as_tensor(tree, dtype=torch.bool, device=dev)

            def forward(t, s, st):
                return self.model(t, s, st, self.cache, positions=pos_t, tree=tree_t)
        if dev.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            with torch.inference_mode():
                logits = forward(t, s, st)
            end.record()
            end.synchronize()
            return logits, begin.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        with torch.inference_mode():
            logits = forward(t, s, st)
        return logits, time.perf_counter() - t0

    def _sample(self, logits: torch.Tensor, keys: Sequence[int], positions: np.ndarray) -> np.ndarray:
        dev = logits.device
        keys_t = torch.as_tensor(np.asarray(keys), dtype=torch.int64, device=dev)
        pos_t = torch.as_tensor(np.asarray(positions), dtype=torch.int64, device=dev)
        out = self.sampler(logits, self.seed, keys_t, pos_t, self.temperature, self.top_p)
        return out.cpu().numpy().astype(np.int64)

    def _finished(self, a: _Active) -> bool:
        return bool(a.out and (a.out[-1] in self.eos or len(a.out) >= self.max_new_tokens))

    def _retire(self, a: _Active, drafter: Any, free: list[int], done: dict[int, RolloutOutput]) -> None:
        drafter.end(a.req.rid)
        free.append(a.slot)
        done[a.req.rid] = RolloutOutput(a.req, list(a.out), bool(a.out[-1] in self.eos))


def sample_kw(drafter: Any, sample: int) -> dict[str, int]:
    """``sample=`` for drafters that draft per (prompt, sample) (``uses_sample``: prevrollout)."""
    return {"sample": int(sample)} if getattr(drafter, "uses_sample", False) else {}


def _parameters(model: Any) -> Any:
    try:
        return inspect.signature(model.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return {}


def supports_trees(model: Any, cache: Any) -> bool:
    """The model's forward takes ``positions``/``tree`` and the cache has per-layer K/V to move."""
    params = _parameters(model)
    return "tree" in params and "positions" in params and hasattr(cache, "k") and hasattr(cache, "v")


def _record(phase: str, step: int, iteration: int, q: np.ndarray, c: np.ndarray, q_max: int,
            drafted: int, accepted: int, new_tokens: int, wall: float, fwd: float) -> dict[str, Any]:
    return {"step": step, "phase": phase, "iteration": iteration, "batch_size": int(q.shape[0]),
            "q_sum": int(q.sum()), "q_max": int(q_max), "c_sum": int(c.sum()), "c_max": int(c.max()),
            "qc_sum": float((q * (c + (q + 1.0) / 2.0)).sum()), "draft_tokens": 0,
            "drafted": drafted, "accepted": accepted, "new_tokens": new_tokens,
            "wall_s": wall, "forward_wall_s": fwd, "lossy_tokens": 0, "draft_wall_s": 0.0}


def _cache_capacity(cache: Any) -> int:
    for name in ("max_ctx", "max_len", "max_seq_len"):
        if hasattr(cache, name):
            return int(getattr(cache, name))
    return int(cache.k.shape[-2])


def _cache_slots(cache: Any) -> int:
    for name in ("n_slots", "slots"):
        if hasattr(cache, name):
            return int(getattr(cache, name))
    return int(cache.k.shape[1])
