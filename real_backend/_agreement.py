"""Token agreement of speculative rollouts with autoregressive ones.

On a CPU in float32 the model is batch-invariant (real_backend/_model.py, MIN_ROWS), so every
policy's output equals AR's bit for bit and anything else is a bug: :func:`require_identical`
raises. On a GPU (or in bf16/fp16 anywhere) a verify forward (q = k + 1 rows per request, other
requests alongside, a different batch bucket) and a decode forward (q = 1) use different kernels
whose results differ in the low bits; a keyed sample whose uniform falls within that difference of a
CDF edge flips, and the two rollouts go separate ways from there. That is not a bug, but it must be
measured, not assumed away: :func:`agreement` reports

- ``token_agreement``: the fraction of AR's tokens reproduced before each rollout's first divergence
  (tokens after a divergence continue another text and are not compared);
- ``rollouts_identical``: the fraction of rollouts equal token for token;
- per divergent rollout, where it diverged (response position) and the *probability margin* there:
  the AR prefix's next-token distribution is recomputed in one plain forward, and the margin is how
  far the keyed uniform u lies from the nearest edge of AR's token interval in the CDF (T > 0), or
  p(top 1) - p(top 2) (T = 0). A near-tie flip has a margin of ~1e-3 or less; a margin of 0.1 is a
  bug, whatever the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from specroll.core.errors import SpecrollError

MarginFn = Callable[[int, int, int, list[int], list[int]], dict[str, Any]]
MAX_MARGINS = 32  # one forward each: enough to tell near-ties from bugs


def is_strict(device: str, dtype: str) -> bool:
    """Exact equality is promised (and required) on a CPU in float32 only."""
    return device == "cpu" and dtype == "float32"


@dataclass
class Agreement:
    tokens: int = 0
    tokens_agreeing: int = 0
    rollouts: int = 0
    rollouts_identical: int = 0
    divergences: list[dict[str, Any]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.rollouts_identical == self.rollouts

    def to_dict(self) -> dict[str, Any]:
        pos = [d["position"] for d in self.divergences]
        margins = [d["margin"] for d in self.divergences if d.get("margin") is not None]
        first = {"min": min(pos), "median": float(np.median(pos))} if pos else None
        return {"identical": self.identical, "tokens": self.tokens, "tokens_agreeing": self.tokens_agreeing,
                "token_agreement": self.tokens_agreeing / max(1, self.tokens),
                "rollouts": self.rollouts, "rollouts_identical": self.rollouts_identical,
                "rollouts_identical_fraction": self.rollouts_identical / max(1, self.rollouts),
                "first_divergence_position": first, "max_margin": max(margins) if margins else None,
                "divergences": self.divergences}


def _rows(trace: Any) -> dict[tuple[int, int, int], tuple[list[int], list[int]]]:
    cols = trace.table.to_pydict()
    return {(s, p, g): (list(pt), list(t)) for s, p, g, pt, t in zip(
        cols["step"], cols["prompt_id"], cols["sample"], cols["prompt_token_ids"], cols["token_ids"])}


def agreement(ref: Any, other: Any, margin_fn: MarginFn | None = None) -> Agreement:
    """How far ``other``'s rollouts (a trace) reproduce ``ref``'s (AR's), rollout by rollout."""
    a, b = _rows(ref), _rows(other)
    if set(a) != set(b):
        raise SpecrollError("the two runs have different rollouts (step, prompt_id, sample)", field="trace",
                            fix="compare runs of the same workload")
    out = Agreement()
    for key in sorted(a):
        prompt, want = a[key]
        got = b[key][1]
        n = min(len(want), len(got))
        diff = next((i for i in range(n) if want[i] != got[i]), None)
        if diff is None and len(want) != len(got):
            diff = n  # one stopped (EOS or cap) where the other went on
        out.tokens += len(want)
        out.rollouts += 1
        if diff is None:
            out.tokens_agreeing += len(want)
            out.rollouts_identical += 1
            continue
        out.tokens_agreeing += diff
        d = {"step": key[0], "prompt_id": key[1], "sample": key[2], "position": diff,
             "ar_token": want[diff] if diff < len(want) else None,
             "token": got[diff] if diff < len(got) else None, "margin": None}
        if margin_fn is not None and len(out.divergences) < MAX_MARGINS and diff < len(want):
            d.update(margin_fn(*key, prompt, want[:diff]))
        out.divergences.append(d)
    return out


def require_identical(results: dict[str, Agreement], where: str) -> None:
    """The CPU fp32 contract: any difference is a lossless-decoding bug."""
    bad = {k: v for k, v in results.items() if not v.identical}
    if bad:
        k, v = next(iter(bad.items()))
        d = v.divergences[0]
        raise SpecrollError(f"speculative outputs differ from autoregressive ones ({k}: rollout step "
                            f"{d['step']} prompt {d['prompt_id']} sample {d['sample']} at position "
                            f"{d['position']})", field="real_backend",
                            fix=f"a lossless-decoding bug on a CPU in float32: see {where}")


def margin_fn(model: Any, *, seed: int, temperature: float, top_p: float, n_prompts: int,
              samples: int) -> MarginFn:
    """The probability margin at a divergence (module doc), from one plain forward of AR's prefix.
    Rollout keys follow rollout()'s numbering: rid = step * n_prompts * samples + prompt * samples + g."""
    import torch

    from specroll.real_backend._model import KVCache
    from specroll.real_backend._sampling import keyed_uniform, top_p_mask

    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype

    def fn(step: int, prompt_id: int, sample: int, prompt: list[int], prefix: list[int]) -> dict[str, Any]:
        seq = torch.tensor([prompt + prefix], dtype=torch.int64, device=dev)
        cache = KVCache(model.cfg, 1, seq.shape[1], dev, dtype)
        with torch.inference_mode():
            logits = model(seq, torch.zeros(1, dtype=torch.int64, device=dev),
                           torch.zeros(1, dtype=torch.int64, device=dev), cache)[0, -1].float()
        if temperature == 0:
            top = torch.softmax(logits, -1).topk(2).values
            return {"margin": float(top[0] - top[1]), "recomputed_token": int(logits.argmax())}
        scaled = logits / float(temperature)
        if top_p < 1.0:
            scaled = scaled.masked_fill(top_p_mask(scaled, top_p), float("-inf"))
        cdf = torch.softmax(scaled, -1).double().cumsum(-1)
        rid = step * n_prompts * samples + prompt_id * samples + sample
        u = float(keyed_uniform(seed, torch.tensor([rid], device=dev),
                                torch.tensor([[len(prefix)]], device=dev))[0, 0]) * float(cdf[-1])
        target = torch.tensor([u], dtype=cdf.dtype, device=dev)
        tok = int(torch.searchsorted(cdf, target).clamp(max=len(cdf) - 1))
        lo = float(cdf[tok - 1]) if tok > 0 else 0.0
        return {"margin": min(u - lo, float(cdf[tok]) - u) / float(cdf[-1]), "recomputed_token": tok}

    return fn


def agreement_with(baseline: str, traces: dict[str, Any], backend: Any, cfg: Any,
                   strict: bool | None = None) -> dict[str, dict[str, Any]]:
    """Every other run's agreement with ``traces[baseline]`` (AR), as to_dict() plus ``strict``.
    ``strict`` (default: a CPU in float32): anything but identical outputs is a lossless-decoding
    bug and raises."""
    fn = None
    if hasattr(backend.model, "cfg"):  # the real model (the toy has no probabilities to recompute)
        fn = margin_fn(backend.model, seed=cfg.seed, temperature=cfg.temperature, top_p=cfg.top_p,
                       n_prompts=len({int(p) for p in traces[baseline].column("prompt_id")}),
                       samples=cfg.samples)
    res = {k: agreement(traces[baseline], tr, fn) for k, tr in traces.items() if k != baseline}
    strict = is_strict(cfg.device, backend.dtype) if strict is None else strict
    if strict:
        require_identical(res, "real/*/rep0/trace.parquet")
    return {k: {**a.to_dict(), "strict": strict} for k, a in res.items()}


def against_ar(cfg: Any, result: Any, backend: Any, run: Callable[..., Any]) -> dict[str, Any]:
    """Decode ``cfg``'s workload autoregressively (no drafter) with the same ``backend`` and report
    ``result``'s agreement with it; on a CPU in float32 a lossless run must be identical.
    ``run`` is rollout() itself (passed in: this module sits beside it, not above it)."""
    from specroll.real_backend._lossy import make_accept_rule

    ar_cfg = cfg.model_copy(update={"policy": "ar", "params": {}, "policy_file": None, "drafter": "none",
                                    "drafter_params": {}, "accept": "exact", "accept_params": {},
                                    "against_ar": False})
    ar = run(ar_cfg, backend=backend)
    # A lossy acceptance rule differs from AR by design: its agreement is reported, never required.
    lossy = make_accept_rule(cfg.accept, **cfg.accept_params).is_lossy
    traces = {"ar": ar.trace, "run": result.trace}
    agree = agreement_with("ar", traces, backend, cfg, strict=False if lossy else None)["run"]
    return {**agree, "ar_makespan_s": ar.summary["makespan_s"], "ar_tokens": ar.summary["tokens"]}


def format_agreement(a: dict[str, Any]) -> str:
    """One line (two when the runs diverged) for a command's summary."""
    head = (f"agreement with AR: {100 * a['token_agreement']:.3f} % of tokens, "
            f"{a['rollouts_identical']}/{a['rollouts']} rollouts identical"
            f"{' (exact equality required here)' if a.get('strict') else ''}")
    if a["identical"]:
        return head
    first, m = a["first_divergence_position"], a.get("max_margin")
    return (f"{head}\n  first divergences at response position {first['min']} (min) / "
            f"{first['median']:.0f} (median); largest probability margin there "
            f"{'-' if m is None else f'{m:.2e}'} (near-ties are < 1e-3)")
