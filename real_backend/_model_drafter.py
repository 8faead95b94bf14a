"""Model drafters: drafts from a forward of (part of) the target itself, batched over requests.

The per-request CPU drafters of policies/ (suffix, ngram, omni, ...) propose from text; a model
drafter needs the model, the engine's KV cache and its keyed sampler, and drafts for all active
requests at once. The engine recognizes one by ``batched = True``: it calls ``bind(engine)`` at
the start of each step and ``draft(...)`` in each decode iteration (docs/systems/drafters.md). The
request calls of the Drafter interface (begin, extend, end, start_step, add_rollout) are kept so
that the rollout loop drives every drafter alike.

``layerskip`` (LayerSkip / Duo-LLM-style self-speculation): the draft model is the target's first
``layers`` layers plus its final norm and LM head (an early exit). It shares the target's KV cache
for those layers: the context's K/V there are exactly the target's, so drafting needs no prefill
and no second cache, and the drafting forwards' own K/V writes (at the draft positions) are
overwritten by the verify forward that follows. Draft token j of a request is sampled from the
early exit's logits with the *target's* keyed uniform for that position (the same seed, request
key and position): when the early exit's distribution is close to the target's, the two inverse-CDF
samples coincide (common random numbers), which is what raises acceptance; at T = 0 both are
argmaxes. ``probs`` are the early exit's probabilities of its drafted tokens (softmax at T, top-p),
real confidences for the policies that read them.

With ``draft_stop`` (the ``ead`` accept rule) a request stops drafting at the first position where
the rolling mean of the early exit's entropy (bits, of softmax(logits), over the request's last
``window`` positions) exceeds ``threshold``: Entropy-Adaptive Decoding's switch to the big model.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
import torch

from specroll.core.errors import SpecrollError
from specroll.core.registry import Registry

MODEL_DRAFTERS: Registry[type] = Registry("model drafter")
_LOG2E = 1.0 / math.log(2.0)


@MODEL_DRAFTERS.register("layerskip")
class LayerSkipDrafter:
    """Self-speculative drafts from the target's first ``layers`` layers (+ final norm + LM head)."""

    name = "layerskip"
    batched = True

    def __init__(self, model: Any, layers: int = 15, kmax: int = 4) -> None:
        total = int(getattr(getattr(model, "cfg", None), "n_layers", 0))
        if total == 0:
            raise SpecrollError("the layerskip drafter needs a layered Transformer model", field="drafter",
                                fix="use it with --model smollm2-135m (the toy model has no layers)")
        if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers < total:
            raise SpecrollError(f"layers must be an integer in [1, {total - 1}], got {layers!r}",
                                field="layers", fix=f"pass layers=N with N < the model's {total} layers")
        if isinstance(kmax, bool) or not isinstance(kmax, int) or kmax < 1:
            raise SpecrollError(f"kmax must be an integer >= 1, got {kmax!r}", field="kmax")
        self.model, self.layers, self.kmax, self.total_layers = model, int(layers), int(kmax), total
        self.engine: Any = None
        self._entropy: dict[int, deque] = {}
        self.stats = {"forwards": 0, "rows": 0, "wall_s": 0.0}

    # ---- the Drafter interface's request calls (bookkeeping only) -------------------------------
    def start_step(self, step: int) -> None: ...
    def add_rollout(self, step: int, prompt_id: int, prompt_tokens: Any, response_tokens: Any) -> None: ...

    def begin(self, rid: int, prompt_id: int, prompt_tokens: Any) -> None:
        self._entropy[int(rid)] = deque()

    def extend(self, rid: int, tokens: Any) -> None: ...

    def end(self, rid: int) -> None:
        self._entropy.pop(int(rid), None)

    def propose(self, rid: int) -> tuple[np.ndarray, np.ndarray]:
        raise SpecrollError("the layerskip drafter drafts in batches inside the engine", field="drafter",
                            fix="use it through real_backend's Engine / `specroll rollout`")

    def to_meta(self) -> dict[str, Any]:
        return {"kind": self.name, "params": {"layers": self.layers, "kmax": self.kmax},
                "kmax": self.kmax, "layer_fraction": self.layers / self.total_layers}

    # ---- batched drafting -------------------------------------------------------------------------
    def bind(self, engine: Any) -> None:
        self.engine = engine

    def draft(self, rids: list[int], pending: np.ndarray, slots: np.ndarray, cached: np.ndarray,
              keys: np.ndarray, generated: np.ndarray, k: np.ndarray,
              stop: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draft up to k[i] tokens per request: (tokens int64 [n, K], probs float32 [n, K], lengths [n]).

        Forward j feeds each still-drafting request's last token at cache position cached + j (the
        pending token first) through the first ``layers`` layers; its logits give draft token j + 1
        at response position generated + j, sampled with the target's keyed uniform there."""
        eng = self.engine
        n = len(rids)
        kk = int(np.max(k)) if n else 0
        toks = np.zeros((n, kk), dtype=np.int64)
        probs = np.zeros((n, kk), dtype=np.float32)
        lens = np.zeros(n, dtype=np.int64)
        alive = np.flatnonzero(np.asarray(k) > 0)
        last = np.asarray(pending, dtype=np.int64).copy()
        dev = eng.device
        t0 = _now()
        for j in range(kk):
            alive = alive[np.asarray(k)[alive] > j]
            if alive.size == 0:
                break
            tokens = torch.as_tensor(last[alive, None], device=dev)
            with torch.inference_mode():
                logits = self.model(tokens, torch.as_tensor(slots[alive], device=dev),
                                    torch.as_tensor(cached[alive] + j, device=dev), eng.cache,
                                    n_layers=self.layers)
            self.stats["forwards"] += 1
            self.stats["rows"] += int(alive.size)
            pos = (generated[alive] + j)[:, None]
            d = eng._sample(logits, keys[alive], pos)[:, 0]
            p = _sampling_probs(logits[:, 0], eng.temperature, eng.top_p)
            pd = p[torch.arange(alive.size, device=p.device), torch.as_tensor(d, device=p.device)]
            keep = np.ones(alive.size, dtype=bool)
            if stop is not None:
                ent = _entropy_bits(logits[:, 0]).cpu().numpy()
                for i, r in enumerate(alive.tolist()):
                    hist = self._entropy.setdefault(int(rids[r]), deque())
                    hist.append(float(ent[i]))
                    while len(hist) > int(stop["window"]):
                        hist.popleft()
                    keep[i] = sum(hist) / len(hist) <= stop["threshold"]
            alive = alive[keep]
            d, pd = d[keep], pd.cpu().numpy()[keep]
            toks[alive, j] = d
            probs[alive, j] = pd
            lens[alive] = j + 1
            last[alive] = d
        self.stats["wall_s"] += _now() - t0
        return toks, probs, lens


def _now() -> float:
    import time
    return time.perf_counter()


def _sampling_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """[n, V] the distribution the keyed sampler draws from (softmax(logits) at T = 0)."""
    from specroll.real_backend._sampling import top_p_mask

    scaled = logits.float() / (temperature if temperature > 0 else 1.0)
    if top_p < 1.0 and temperature > 0:
        scaled = scaled.masked_fill(top_p_mask(scaled, top_p), float("-inf"))
    return torch.softmax(scaled, dim=-1)


def _entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1) * _LOG2E


def make_model_drafter(name: str, model: Any, **params: Any) -> Any:
    cls = MODEL_DRAFTERS.get(name, field="drafter")
    try:
        return cls(model, **params)
    except TypeError as exc:
        raise SpecrollError(f"drafter '{name}': {exc}", field="drafter_params",
                            fix="layerskip takes layers=N and kmax=K") from None
