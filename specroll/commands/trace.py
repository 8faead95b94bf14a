"""`specroll trace ...`: create, inspect and annotate rollout traces.

    specroll trace synth --preset math-16k --prompts 512 --samples 16 --steps 8 --seed 1 --out t.parquet
    specroll trace stats t.parquet [--json stats.json]
    specroll trace plot t.parquet --out plots/
    specroll trace info t.parquet
    specroll trace import servegen --out t.parquet [--data DIR] [--prompts N ...]
    specroll trace import jsonl dump.jsonl --out t.parquet --cap 4096 [--step-field ...]
    specroll trace match t.parquet --drafter suffix [--window W] [--param k=v ...] --out t2.parquet
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from specroll.errors import SpecrollError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="create, inspect and annotate rollout traces (Parquet)",
                       description="Create, inspect and annotate rollout traces (Parquet).")
    tsub = p.add_subparsers(dest="trace_command", metavar="ACTION")
    tsub.required = True

    s = tsub.add_parser("synth", help="synthesize an RL-shaped length trace from a preset")
    s.add_argument("--preset", required=True, help="math-16k, code-8k, reasoning-32k, tiny, servegen-r1")
    s.add_argument("--prompts", type=int, default=None, help="prompts per step (default: the preset's)")
    s.add_argument("--samples", type=int, default=None, help="rollouts per prompt (default: the preset's)")
    s.add_argument("--steps", type=int, default=None, help="RL steps (default: the preset's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--data", default=None, help="ServeGen data folder (servegen-r1 only; or "
                   "SPECROLL_SERVEGEN_DIR)")
    s.add_argument("--out", required=True, help="output trace (.parquet)")
    s.set_defaults(func=_synth)

    st = tsub.add_parser("stats", help="length statistics of a trace")
    st.add_argument("trace")
    st.add_argument("--json", default=None, help="also write the statistics to this JSON file")
    st.set_defaults(func=_stats)

    i = tsub.add_parser("info", help="validate a trace and show its metadata and columns")
    i.add_argument("trace")
    i.set_defaults(func=_info)


def _synth(args: argparse.Namespace) -> int:
    import os

    from specroll.progress import progress, say
    from traces import get_preset, read_meta, synthesize_to_file

    if args.data is not None:
        os.environ["SPECROLL_SERVEGEN_DIR"] = args.data
    preset = get_preset(args.preset)
    steps = args.steps or preset.steps
    say(f"synthesizing {args.preset} -> {args.out}")
    with progress(total=steps, desc="steps", unit="step") as bar:
        rows = synthesize_to_file(args.out, preset, args.prompts, args.samples, args.steps, args.seed,
                                  progress_bar=bar)
    meta = read_meta(args.out)
    syn = meta.extra["synthetic"]
    print(f"wrote {args.out}: {rows:,} rollouts = {syn['prompts']} prompts x {syn['samples']} samples x "
          f"{syn['steps']} steps, cap {meta.max_response_len}, source '{meta.source}'")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from specroll.fileio import write_json
    from traces import format_stats, read_trace, trace_stats

    trace = read_trace(args.trace, columns=[])
    stats = trace_stats(trace)
    print(f"{args.trace}  ({trace.meta.source})")
    print(format_stats(stats))
    if args.json:
        write_json(args.json, stats)
        print(f"wrote {args.json}")
    return 0


def _info(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from traces import read_trace

    trace = read_trace(args.trace)
    print(f"{args.trace}: valid trace, schema version {trace.meta.schema_version}")
    print(f"  rollouts {len(trace):,}, steps {len(trace.steps)}, prompts "
          f"{len(set(trace.column('prompt_id').tolist())):,}")
    print(f"  source {trace.meta.source!r}, model {trace.meta.model!r}, cap {trace.meta.max_response_len}, "
          f"temperature {trace.meta.temperature}")
    print(f"  columns {trace.columns}")
    if trace.drafters:
        print(f"  drafters {json.dumps(trace.meta.extra.get('drafters', {}))}")
    print(f"  file size {Path(args.trace).stat().st_size:,} bytes, row groups "
          f"{pq.ParquetFile(args.trace).num_row_groups}")
    return 0


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """``key=value`` strings -> dict, values parsed as JSON when they parse (numbers, bools)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SpecrollError(f"'{pair}' is not key=value", field="--param", fix="write --param key=value")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
