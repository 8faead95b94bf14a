"""One timed decode/verify forward of the engine's own code path, for cost-model calibration.

``make_timing_step(model, device, dtype, max_batch, max_ctx, random_weights)`` loads the model
(SmolLM2's trained weights, or a random-weight shape from calibration.MODEL_SHAPES) and a static
KV cache; ``TimingStep.run(q_lens, ctx_lens)`` times one forward of a batch whose row i has
``q_lens[i]`` query tokens over ``ctx_lens[i]`` cached ones, padded exactly as the engine pads
(right-padded to max(q_lens)), then samples every query position with the engine's keyed sampler
at ``temperature`` (as the engine does each iteration: sampling 49k-way at T > 0 costs ~0.3 ms per
query row on a CPU core, ~20 % of a small-batch forward, and it grows with the verified tokens;
``temperature=None`` times the forward alone). On CUDA the forward is the CUDA-graph pool's
replay, timed with CUDA events; on CPU, wall time around the synchronous calls. KV contents are
arbitrary (timing does not depend on values).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from real_backend._model import KVCache, Transformer, load_model, torch_dtype
from specroll.errors import SpecrollError


class TimingStep:
    def __init__(self, model: Transformer, cache: KVCache, device: torch.device, graphs: Any = None,
                 max_batch: int | None = None, temperature: float | None = 0.7, top_p: float = 1.0) -> None:
        self.model = model
        self.cache = cache
        self.device = device
        self.graphs = graphs
        self.max_batch = int(max_batch or cache.n_slots)
        self.max_ctx = cache.max_ctx
        self._gen = torch.Generator().manual_seed(0)
        self.temperature = temperature
        self.top_p = float(top_p)

    def _sample(self, logits: torch.Tensor, start: torch.Tensor) -> None:
        if self.temperature is None:
            return
        from real_backend._sampling import keyed_sample

        n, q = logits.shape[0], logits.shape[1]
        keys = torch.arange(n, device=logits.device)
        positions = start[:, None] + torch.arange(q, device=logits.device)[None, :]
        keyed_sample(logits, 0, keys, positions, float(self.temperature), self.top_p)

    @property
    def shape(self):  # -> calibration.ModelShape
        return self.model.cfg.shape

    def _batch(self, q_lens: Sequence[int], ctx_lens: Sequence[int]) -> tuple[torch.Tensor, ...]:
        q = [int(x) for x in q_lens]
        c = [int(x) for x in ctx_lens]
        if not q or len(q) != len(c):
            raise SpecrollError(f"need one ctx_len per q_len, got {len(q)} and {len(c)}", field="q_lens",
                                fix="pass equal-length, non-empty q_lens and ctx_lens")
        if len(q) > self.max_batch:
            raise SpecrollError(f"batch of {len(q)} exceeds max_batch {self.max_batch}", field="q_lens",
                                fix=f"make the timing step with max_batch >= {len(q)}")
        if min(q) < 1 or min(c) < 0:
            raise SpecrollError("q_lens must be >= 1 and ctx_lens >= 0", field="q_lens",
                                fix="pass positive query lengths and non-negative context lengths")
        q_max = max(q)
        if max(c) + q_max > self.max_ctx:
            raise SpecrollError(f"ctx {max(c)} + query {q_max} exceeds the cache ({self.max_ctx})",
                                field="ctx_lens",
                                fix=f"make the timing step with max_ctx >= {max(c) + q_max}")
        tokens = torch.randint(0, self.model.cfg.vocab_size, (len(q), q_max), generator=self._gen)
        return (tokens.to(self.device), torch.arange(len(q), device=self.device),
                torch.tensor(c, dtype=torch.int64, device=self.device))

    @torch.inference_mode()
    def run(self, q_lens: Sequence[int], ctx_lens: Sequence[int]) -> float:
        """Seconds of one forward of this batch (synchronized)."""
        tokens, slots, start = self._batch(q_lens, ctx_lens)
        if self.device.type == "cuda":
            forward = self.graphs if self.graphs is not None else (
                lambda t, s, st: self.model(t, s, st, self.cache))
            if self.graphs is not None:  # capture outside the timed region
                q_max = tokens.shape[1]
                key = self.graphs.key(len(q_lens), q_max, int(start.max()) + q_max)
                if key is not None:
                    self.graphs.warmup([key])
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(self.device)
            begin.record()
            self._sample(forward(tokens, slots, start), start)
            end.record()
            end.synchronize()
            return begin.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        self._sample(self.model(tokens, slots, start, self.cache), start)
        return time.perf_counter() - t0


def make_timing_step(model: str = "smollm2-135m", device: str = "cpu", dtype: str = "float32",
                     max_batch: int = 16, max_ctx: int = 2048, random_weights: bool = False,
                     seed: int = 0, cuda_graphs: bool = True, temperature: float | None = 0.7,
                     top_p: float = 1.0) -> TimingStep:
    """A :class:`TimingStep` for ``model`` on ``device`` (see module doc)."""
    if max_batch < 1 or max_ctx < 2:
        raise SpecrollError(f"max_batch {max_batch} / max_ctx {max_ctx} too small", field="max_batch",
                            fix="use max_batch >= 1 and max_ctx >= 2")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpecrollError("CUDA is not available on this machine", field="device", fix="use --device cpu")
    m = load_model(model, device=device, dtype=dtype, random_weights=random_weights, seed=seed,
                   max_ctx=max(max_ctx, 2) if random_weights else None)
    if max_ctx > m.cfg.max_ctx:
        raise SpecrollError(f"max_ctx {max_ctx} exceeds the model's context {m.cfg.max_ctx}", field="max_ctx",
                            fix=f"use max_ctx <= {m.cfg.max_ctx}")
    use_graphs = dev.type == "cuda" and cuda_graphs
    # The graph pool's padding rows need one spare scratch slot beyond the batch.
    cache = KVCache(m.cfg, max_batch + int(use_graphs), max_ctx, dev, torch_dtype(dtype))
    graphs = None
    if use_graphs:
        from real_backend._graphs import GraphPool

        graphs = GraphPool(m, cache, max_batch=max_batch)
    return TimingStep(m, cache, dev, graphs, max_batch, temperature=temperature, top_p=top_p)
