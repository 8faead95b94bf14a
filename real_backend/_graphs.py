"""A pool of CUDA graphs for the decode/verify forward, keyed by (batch bucket, query length,
context bucket), as TLT does.

An eager forward of a 135M model on a GPU costs ~20 ms of kernel launches and Python whatever the
batch, which hides the bytes and FLOPs the cost model is about. Replaying a captured graph costs
one launch. A graph has static shapes, so a batch of B rows with query length Q whose longest row
needs C cache positions runs the graph of ``(bucket(B), Q, bucket(C))``: real rows are copied into
the graph's static input buffers, the spare rows are padding that point at a scratch cache slot
(``cache.n_slots - 1``, which the engine must leave unused), and attention reads exactly the
context bucket (padded to it, masked causally), so time tracks the bytes actually needed.

Two layouts, because a graph cannot look at slot values (real_backend/_model.py's read plans do):
- *aligned* (when the batch's slots all lie below a bucket at most twice the batch's own): real row
  i sits at static row ``slots[i]``, padding rows fill the rest, and attention reads the contiguous
  view of slots 0..bucket-1: no copy of any K/V. Early in a step, and in every timing run, slots
  are dense and this is the layout.
- *gathered* (a few requests left in scattered slots, late in a step): rows 0..b-1 are the batch
  and attention gathers their K/V (a copy per layer, but only of b rows).
Padding rows of either layout write their K/V into the scratch slot, never a request's.

Graphs are captured lazily on first use (or by :meth:`GraphPool.warmup`) into one memory pool and
write their logits into one shared output buffer, so that a capture's intermediates are reused by
the next capture instead of accumulating per graph (a 7B verify graph's own fp32 logits at batch
256 x 17 would be 2.6 GB each). Query lengths above ``max_q`` (prefill) run eagerly. On a CPU the
same bucketing, layouts and padding run eagerly (no capture), so this logic is tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


def default_batch_buckets(max_batch: int) -> tuple[int, ...]:
    """1, 2, 4, 8, then multiples of 8 up to max_batch (TLT-like: fine steps where batches shrink)."""
    out = [b for b in (1, 2, 4) if b < max_batch]
    b = 8
    while b < max_batch:
        out.append(b)
        b += 8 if b < 64 else 32
    out.append(max_batch)
    return tuple(sorted(set(out)))


def default_q_buckets(max_q: int) -> tuple[int, ...]:
    """1, 2, 3, then 2^n + 1 (a verify of 4, 8, 16 drafts), capped by (and ending at) max_q: a query
    is padded to its bucket (padding columns come after the real ones, so causal attention keeps
    them out of the real rows), which captures 5 graphs per batch bucket instead of 9 at k <= 8."""
    return tuple(q for q in (1, 2, 3, 5, 9, 17, 33, 65) if q < max_q) + (int(max_q),)


def default_ctx_buckets(max_ctx: int, smallest: int = 128) -> tuple[int, ...]:
    """Powers of two from ``smallest``, capped by (and ending at) max_ctx."""
    out, c = [], smallest
    while c < max_ctx:
        out.append(c)
        c *= 2
    out.append(max_ctx)
    return tuple(out)


def bucket_up(x: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= x (buckets ascending)."""
    for b in buckets:
        if b >= x:
            return int(b)
    raise ValueError(f"{x} exceeds the largest bucket {buckets[-1]}")


@dataclass(frozen=True)
class GraphKey:
    batch: int
    q: int
    ctx: int
    aligned: bool = False  # row r of the graph is cache slot r (see the module doc)


@dataclass
class _Graph:
    tokens: torch.Tensor   # [Bb, Q] int64 static inputs
    slots: torch.Tensor    # [Bb] where each row writes its K/V (the scratch slot for padding rows)
    start: torch.Tensor    # [Bb]
    graph: Any = None      # torch.cuda.CUDAGraph once captured; it writes pool.out[:Bb, :Q]


class GraphPool:
    """``pool(tokens, slots, start) -> logits``: the engine's forward, bucketed and graph-replayed."""

    def __init__(self, model: torch.nn.Module, cache: Any, *, max_batch: int | None = None, max_q: int = 16,
                 batch_buckets: Sequence[int] | None = None, ctx_buckets: Sequence[int] | None = None,
                 use_graphs: bool | None = None) -> None:
        if cache.n_slots < 2:
            raise ValueError("the graph pool needs a cache with a spare scratch slot (n_slots >= 2)")
        self.model = model
        self.cache = cache
        self.scratch_slot = cache.n_slots - 1
        self.max_batch = int(max_batch or cache.n_slots - 1)
        if self.max_batch > self.scratch_slot:
            raise ValueError(f"max_batch {self.max_batch} needs {self.max_batch + 1} cache slots "
                             f"(one is the padding rows' scratch slot), the cache has {cache.n_slots}")
        self.max_q = int(max_q)
        self.q_buckets = default_q_buckets(self.max_q)
        self.batch_buckets = tuple(batch_buckets or default_batch_buckets(self.max_batch))
        self.ctx_buckets = tuple(ctx_buckets or default_ctx_buckets(cache.max_ctx))
        self.device = cache.k.device
        self.use_graphs = self.device.type == "cuda" if use_graphs is None else bool(use_graphs)
        self.graphs: dict[GraphKey, _Graph] = {}
        self.out: torch.Tensor | None = None  # [max batch bucket, max_q, V] float32, shared by all graphs
        self._mempool: Any = None
        self.replays = 0
        self.eager_calls = 0

    def key(self, batch: int, q: int, c_max: int, slots: Sequence[int] | None = None) -> GraphKey | None:
        """The graph serving a batch of ``batch`` rows in cache ``slots`` (None: gathered layout),
        query length ``q``, ``c_max`` positions read; None when it runs eagerly (prefill-sized
        queries, or batches above the largest bucket)."""
        if q > self.max_q or batch > self.batch_buckets[-1] or c_max > self.ctx_buckets[-1]:
            return None
        qb = bucket_up(q, self.q_buckets)
        if c_max + qb - q <= self.cache.max_ctx:  # padded columns must fit in the cache too
            c_max, q = c_max + qb - q, qb
        ctx, own = bucket_up(c_max, self.ctx_buckets), bucket_up(batch, self.batch_buckets)
        if slots is not None and len(set(slots)) == batch and max(slots) < self.batch_buckets[-1]:
            span = bucket_up(max(slots) + 1, self.batch_buckets)
            if span <= 2 * own:  # holes cost at most as much attention as the real rows
                return GraphKey(span, q, ctx, aligned=True)
        return GraphKey(own, q, ctx)

    def __call__(self, tokens: torch.Tensor, slots: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        b, q = tokens.shape
        # One small transfer to the host (slots and starts) chooses the graph before any launch.
        host_slots, host_start = torch.stack([slots, start]).tolist()
        c_max = max(host_start) + q
        if c_max > self.cache.max_ctx:
            raise ValueError(f"start + Q = {c_max} exceeds the cache ({self.cache.max_ctx} positions)")
        key = self.key(b, q, c_max, host_slots)
        if key is None:
            self.eager_calls += 1
            return self.model(tokens, slots, start, self.cache)
        g = self._get(key)
        # Padding rows: scratch slot, position 0, so their K/V writes never touch a real slot.
        g.tokens.zero_()
        g.slots.fill_(self.scratch_slot)
        g.start.zero_()
        rows = slots if key.aligned else torch.arange(b, device=slots.device)
        g.tokens[:, :q].index_copy_(0, rows, tokens)
        g.slots.index_copy_(0, rows, slots)
        g.start.index_copy_(0, rows, start)
        if g.graph is not None:
            g.graph.replay()
            self.replays += 1
            logits = self.out[:key.batch, :q]
        else:
            logits = self._step(key, g)[:, :q]
        return logits.index_select(0, rows)  # a copy: the next replay overwrites the buffer

    def warmup(self, keys: Sequence[GraphKey]) -> None:
        """Capture these graphs now (timing runs should not include a capture)."""
        for key in keys:
            self._get(key)

    def _get(self, key: GraphKey) -> _Graph:
        g = self.graphs.get(key)
        if g is None:
            dev = self.device
            g = _Graph(torch.zeros(key.batch, key.q, dtype=torch.int64, device=dev),
                       torch.full((key.batch,), self.scratch_slot, dtype=torch.int64, device=dev),
                       torch.zeros(key.batch, dtype=torch.int64, device=dev))
            if self.use_graphs:
                self._capture(key, g)
            self.graphs[key] = g
        return g

    def _step(self, key: GraphKey, g: _Graph) -> torch.Tensor:
        """The bucketed forward itself (what a graph captures): logits [Bb, Q, V]."""
        return self.model(g.tokens, g.slots, g.start, self.cache, c_max=key.ctx, aligned=key.aligned)

    def _capture(self, key: GraphKey, g: _Graph) -> None:
        with torch.inference_mode():
            # Warm up on a side stream (cuBLAS/attention workspaces get allocated outside the graph).
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    logits = self._step(key, g)
            torch.cuda.current_stream(self.device).wait_stream(side)
            if self.out is None:  # allocated once, outside any graph, for the largest graph
                self.out = logits.new_empty((self.batch_buckets[-1], self.max_q, logits.shape[-1]))
            del logits
            if self._mempool is None:
                self._mempool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._mempool):
                # Copied into the shared buffer, the graph's own logits are an intermediate whose
                # memory the pool hands to the next capture.
                self.out[:key.batch, :key.q].copy_(self._step(key, g))
        g.graph = graph
