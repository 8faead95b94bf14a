"""`specroll export-vllm best_policy.json`: the closest vLLM speculative_config (suffix decoding).

    specroll export-vllm out/tune-das/best_policy.json
    specroll export-vllm best_policy.json --max-batch 512 --no-per-batch --out vllm.json

Prints the speculative_config as JSON (paste it into ``LLM(speculative_config=...)`` or
``vllm serve --speculative-config '...'``), then, per policy parameter, how it is expressed or why
it cannot be, and the mapping's caveats. Also writes all of it to --out (default: beside the policy
file, ``NAME.vllm.json``). See policies/_vllm.py for the mapping.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-vllm", help="the closest vLLM speculative_config to a policy file",
                       description="Print the closest vLLM suffix-decoding speculative_config to a "
                                   "best_policy.json, and what of the policy it cannot express.")
    p.add_argument("policy_file", help="best_policy.json (from `specroll tune`) or any policy file")
    p.add_argument("--max-batch", type=int, default=256,
                   help="engine batch cap (vLLM max_num_seqs): range of the batch-size schedule")
    p.add_argument("--no-per-batch", action="store_true",
                   help="leave out num_speculative_tokens_per_batch_size (a static config only)")
    p.add_argument("--kmax", type=int, default=None, help="cap drafts at the drafter's proposal length")
    p.add_argument("--profile", default=None,
                   help="cost profile of the deployment (DEVICE:MODEL or a JSON) for policies priced with "
                        "one (mdp)")
    p.add_argument("--out", default=None, help="output JSON (default: POLICY_FILE stem + .vllm.json)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from specroll.core.fileio import read_json, write_json
    from specroll.policies import policy_from_dict, vllm_config

    spec = read_json(args.policy_file)
    policy = policy_from_dict(spec, file=args.policy_file)
    if args.profile is not None:
        from specroll.calibration import load_profile

        policy.bind_cost(load_profile(args.profile))
    # A tuned policy (best_policy.json) carries its study's record: nothing outside it is exported.
    export = vllm_config(policy, max_batch=args.max_batch, per_batch=not args.no_per_batch, kmax=args.kmax,
                         tuning=spec.get("tuning"), file=args.policy_file)
    for line in export.clipped:
        print(f"specroll: warning: CLIPPED: {line}", file=sys.stderr)
    src = Path(args.policy_file)
    out = Path(args.out) if args.out else src.with_name(src.stem + ".vllm.json")
    write_json(out, {"source": str(src), **export.to_dict()})
    print(export.config_json() if export.config is not None
          else "null  (no speculative_config: run without speculation)")
    print()
    print(f"policy {policy.name}: per parameter")
    width = max((len(k) for k in export.params), default=0)
    for name, how in export.params.items():
        print(f"  {name:<{width}}  {how}")
    if export.notes:
        print("notes:")
        for note in export.notes:
            print(f"  - {note}")
    print(f"wrote {out}")
    return 0
