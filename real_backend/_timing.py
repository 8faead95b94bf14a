"""One timed engine iteration of the real backend, for cost-model calibration.

``make_timing_step(model, device, dtype, max_batch, max_ctx, random_weights)`` loads the model
(SmolLM2's trained weights, or a random-weight shape from calibration.MODEL_SHAPES) and a static
KV cache; ``TimingStep.run(q_lens, ctx_lens)`` times one iteration of a batch whose row i has
``q_lens[i]`` query tokens over ``ctx_lens[i]`` cached ones. KV contents are arbitrary (timing
does not depend on values).

What is timed (``mode``), because the simulator prices whole engine iterations:
- ``engine`` (default): the engine's own iteration code. A batch with cached context runs
  ``Engine._decode`` (the policy's decision, gathering k_i = q_i - 1 draft tokens per request from
  a scripted drafter, the padded forward, keyed sampling of every query position at
  ``temperature``, acceptance and bookkeeping); a batch with no cached context runs
  ``Engine._prefill`` (forward, then one sampled token per prompt). Sampling 49k-way at T > 0 costs
  ~0.3 ms per query row on a CPU core, ~20 % of a small-batch forward, and the bookkeeping is a
  few ms per iteration: a profile of the forward alone under-predicts a rollout.
- ``forward``: the padded forward alone (CUDA-graph replay timed with CUDA events on GPU): the
  quantity to compare with the memory-bandwidth floor.
The scripted drafter costs nothing; a real drafter's cost is the profile's separate drafter term.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from specroll.core.errors import SpecrollError
from specroll.real_backend._load import load_model, torch_dtype
from specroll.real_backend._model import KVCache, Transformer

MODES = ("engine", "forward")


class _ScriptedDrafter:
    """Proposes exactly ``k[rid]`` arbitrary tokens for each request (the verify path at chosen q)."""

    name = "scripted"

    def __init__(self, kmax: int) -> None:
        self.kmax = int(kmax)
        self.proposals: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def begin(self, rid: int, prompt_id: int, prompt_tokens: np.ndarray) -> None: ...

    def extend(self, rid: int, tokens: np.ndarray) -> None: ...

    def end(self, rid: int) -> None: ...

    def propose(self, rid: int) -> tuple[np.ndarray, np.ndarray]:
        return self.proposals[rid]


class _ScriptedPolicy:
    """Decides the scripted draft lengths (duck-typed Policy: decide / observe / reset)."""

    name = "scripted"

    def __init__(self) -> None:
        self.k = np.zeros(0, dtype=np.int32)

    def reset(self, n_engines: int) -> None: ...

    def decide(self, state: Any) -> np.ndarray:
        return self.k

    def observe(self, state: Any, feedback: Any) -> None: ...


class TimingStep:
    def __init__(self, model: Transformer, cache: KVCache, device: torch.device, graphs: Any = None,
                 max_batch: int | None = None, temperature: float | None = 0.7, top_p: float = 1.0,
                 mode: str = "engine") -> None:
        if mode not in MODES:
            raise SpecrollError(f"unknown timing mode '{mode}'", field="mode", fix=f"use one of {MODES}")
        self.model = model
        self.cache = cache
        self.device = device
        self.graphs = graphs
        self.max_batch = int(max_batch or cache.n_slots)
        self.max_ctx = cache.max_ctx
        self._gen = torch.Generator().manual_seed(0)
        self.temperature = temperature
        self.top_p = float(top_p)
        self.mode = mode
        self._engine: Any = None

    @property
    def shape(self):  # -> calibration.ModelShape
        return self.model.cfg.shape

    def _check(self, q_lens: Sequence[int], ctx_lens: Sequence[int]) -> tuple[list[int], list[int]]:
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
        if max(c) + max(q) > self.max_ctx:
            raise SpecrollError(f"ctx {max(c)} + query {max(q)} exceeds the cache ({self.max_ctx})",
                                field="ctx_lens",
                                fix=f"make the timing step with max_ctx >= {max(c) + max(q)}")
        return q, c

    def _tokens(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(0, self.model.cfg.vocab_size, shape, generator=self._gen)

    def run(self, q_lens: Sequence[int], ctx_lens: Sequence[int]) -> float:
        """Seconds of one iteration of this batch (synchronized); see the module doc for what."""
        q, c = self._check(q_lens, ctx_lens)
        if self.mode == "forward":
            return self._run_forward(q, c)
        return self._run_engine(q, c)

    # --- mode "engine": the engine's own iteration code ----------------------------------------
    def _make_engine(self) -> Any:
        from specroll.real_backend._engine import Engine

        forward = self.graphs if self.graphs is not None else None
        # No EOS (-1 is never a token) and no length cap within the cache: nothing retires mid-timing.
        return Engine(self.model, self.cache, max_batch=self.max_batch, max_new_tokens=self.max_ctx,
                      eos_ids=[-1], seed=0, temperature=float(self.temperature or 0.0), top_p=self.top_p,
                      forward=forward)

    @torch.inference_mode()
    def _run_engine(self, q: list[int], c: list[int]) -> float:
        from specroll.real_backend._engine import _Active
        from specroll.real_backend._workload import RolloutRequest

        if self._engine is None:
            self._engine = self._make_engine()
        engine = self._engine
        if max(c) == 0:  # a prefill: every row is a whole prompt
            toks = self._tokens((len(q), max(q))).tolist()
            active = [_Active(RolloutRequest(i, 0, i, 0, tuple(toks[i][:q[i]])), i, [], float("nan"))
                      for i in range(len(q))]
            drafter = _ScriptedDrafter(0)
            self._sync()
            t0 = time.perf_counter()
            engine._prefill(active, drafter, 0)
            self._sync()
            return time.perf_counter() - t0
        # A decode/verify: row i has c_i cached tokens (prompt + out[:-1]) and drafts q_i - 1 tokens.
        kmax = max(q) - 1
        drafter = _ScriptedDrafter(kmax)
        policy = _ScriptedPolicy()
        policy.k = np.asarray(q, dtype=np.int32) - 1
        active = []
        for i in range(len(q)):
            prompt = tuple(self._tokens((c[i],)).tolist())  # cached = prompt; out[-1] is pending
            a = _Active(RolloutRequest(i, 0, i, 0, prompt), i, [int(self._tokens((1,)))], float("nan"))
            drafter.proposals[i] = (self._tokens((kmax,)).numpy().astype(np.int64),
                                    np.full(kmax, 0.5, dtype=np.float32))
            active.append(a)
        self._sync()
        t0 = time.perf_counter()
        engine._decode(active, policy, drafter, kmax, 0, 0, 0.0)
        self._sync()
        return time.perf_counter() - t0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- mode "forward": the padded forward alone ------------------------------------------------
    @torch.inference_mode()
    def _run_forward(self, q: list[int], c: list[int]) -> float:
        q_max = max(q)
        tokens = self._tokens((len(q), q_max)).to(self.device)
        slots = torch.arange(len(q), device=self.device)
        start = torch.tensor(c, dtype=torch.int64, device=self.device)
        if self.device.type == "cuda":
            forward = self.graphs if self.graphs is not None else (
                lambda t, s, st: self.model(t, s, st, self.cache))
            if self.graphs is not None:  # capture outside the timed region
                key = self.graphs.key(len(q), q_max, int(start.max()) + q_max, list(range(len(q))))
                if key is not None:
                    self.graphs.warmup([key])
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(self.device)
            begin.record()
            forward(tokens, slots, start)
            end.record()
            end.synchronize()
            return begin.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        self.model(tokens, slots, start, self.cache)
        return time.perf_counter() - t0


def make_timing_step(model: str = "smollm2-135m", device: str = "cpu", dtype: str = "float32",
                     max_batch: int = 16, max_ctx: int = 2048, random_weights: bool = False,
                     seed: int = 0, cuda_graphs: bool = True, temperature: float | None = 0.7,
                     top_p: float = 1.0, mode: str = "engine") -> TimingStep:
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
        from specroll.real_backend._graphs import GraphPool

        graphs = GraphPool(m, cache, max_batch=max_batch)
    return TimingStep(m, cache, dev, graphs, max_batch, temperature=temperature, top_p=top_p, mode=mode)
