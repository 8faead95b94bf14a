"""Decode throughput of the lean SmolLM2-135M model on this machine (tokens/s), batch 1 and 16.

    .venv/bin/python benchmarks/bench_model.py [--threads N] [--steps 32] [--ctx 256] [--hf]
                                               [--no-invariant]

Each row: B requests with ``ctx`` cached tokens decode ``steps`` tokens each, one forward + one
keyed_sample per step (the engine's decode work without drafting). ``--hf`` adds transformers'
own LlamaForCausalLM (same GGUF, DynamicCache) at batch 1 as the outside reference.
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def bench_ours(batch: int, ctx: int, steps: int, temperature: float, invariant: bool) -> tuple[float, float]:
    from specroll.real_backend import KVCache, keyed_sample, load_model

    model = load_model()
    model.batch_invariant = invariant
    cache = KVCache(model.cfg, batch, ctx + steps + 1)
    g = torch.Generator().manual_seed(0)
    slots = torch.arange(batch)
    with torch.inference_mode():
        model(torch.randint(0, model.cfg.vocab_size, (batch, ctx), generator=g), slots,
              torch.zeros(batch, dtype=torch.int64), cache)  # prefill (not timed)
        tok = torch.randint(0, model.cfg.vocab_size, (batch, 1), generator=g)
        t_fwd = t_sample = 0.0
        for i in range(steps):
            t0 = time.perf_counter()
            logits = model(tok, slots, torch.full((batch,), ctx + i), cache)
            t1 = time.perf_counter()
            tok = keyed_sample(logits, 0, slots, torch.full((batch, 1), i), temperature, 1.0)
            t2 = time.perf_counter()
            t_fwd += t1 - t0
            t_sample += t2 - t1
    return t_fwd / steps, t_sample / steps


def bench_hf(ctx: int, steps: int) -> float:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM

    from specroll.real_backend import model_file

    path = model_file()
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                              dtype=torch.float32).eval()
    ids = torch.randint(0, hf.config.vocab_size, (1, ctx), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = hf(ids, use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(steps):
            out = hf(tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--hf", action="store_true", help="also time transformers' forward at batch 1")
    ap.add_argument("--no-invariant", action="store_true",
                    help="also time with Transformer.batch_invariant off (fastest, not bitwise invariant)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} ctx={args.ctx} steps={args.steps} load_avg={os.getloadavg()[0]:.2f}")
    print(f"{'impl':<14}{'batch':>6}{'fwd ms':>10}{'sample ms':>11}{'tokens/s':>10}")
    for invariant in (True, False) if args.no_invariant else (True,):
        name = "specroll" if invariant else "specroll-fast"
        for batch in (1, 16):
            fwd, smp = bench_ours(batch, args.ctx, args.steps, args.temperature, invariant)
            print(f"{name:<14}{batch:>6}{fwd * 1e3:>10.1f}{smp * 1e3:>11.1f}{batch / (fwd + smp):>10.1f}")
    if args.hf:
        fwd = bench_hf(args.ctx, args.steps)
        print(f"{'transformers':<14}{1:>6}{fwd * 1e3:>10.1f}{'-':>11}{1 / fwd:>10.1f}")


if __name__ == "__main__":
    main()
