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

from specroll.core.errors import SpecrollError
from specroll.core.kv import parse_pairs


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
    s.add_argument("--seed", type=int, default=0, help="random seed of the synthetic trace")
    s.add_argument("--data", default=None, help="ServeGen data folder (servegen-r1 only; or "
                   "SPECROLL_SERVEGEN_DIR)")
    s.add_argument("--out", required=True, help="output trace (.parquet)")
    s.set_defaults(func=_synth)

    st = tsub.add_parser("stats", help="length statistics of a trace")
    st.add_argument("trace")
    st.add_argument("--json", default=None, help="also write the statistics to this JSON file")
    st.set_defaults(func=_stats)

    pl = tsub.add_parser("plot", help="PNG plots: length histogram (log axes), per-prompt lengths by step")
    pl.add_argument("trace")
    pl.add_argument("--out", required=True, help="output folder")
    pl.set_defaults(func=_plot)

    im = tsub.add_parser("import", help="import ServeGen distributions or JSONL rollout dumps")
    isub = im.add_subparsers(dest="import_kind", metavar="KIND")
    isub.required = True
    sg = isub.add_parser("servegen", help="RL-shaped trace whose length marginal is ServeGen DeepSeek-R1")
    sg.add_argument("--data", default=None, help="servegen-deepseek-r1 folder (default: "
                    "$SPECROLL_SERVEGEN_DIR or ../shared/data/servegen-deepseek-r1)")
    sg.add_argument("--prompts", type=int, default=None, help="prompts per step (default: the preset's 512)")
    sg.add_argument("--samples", type=int, default=None,
                    help="rollouts per prompt (default: the preset's 16)")
    sg.add_argument("--steps", type=int, default=None, help="RL steps (default: the preset's 8)")
    sg.add_argument("--seed", type=int, default=0, help="random seed of the RL structure")
    sg.add_argument("--out", required=True, help="output trace (.parquet)")
    sg.set_defaults(func=_import_servegen)
    js = isub.add_parser("jsonl", help="one JSON record per response (verl/OpenRLHF-style dumps)")
    js.add_argument("file", help="the dump: one JSON record per response")
    js.add_argument("--out", required=True, help="output trace (.parquet)")
    js.add_argument("--cap", type=int, required=True, help="generation cap (max response tokens)")
    js.add_argument("--step-field", default="step", help="record field holding the RL step")
    js.add_argument("--group-field", default="uid",
                    help="field naming the prompt's group within a step (verl's uid)")
    js.add_argument("--prompt-field", default="prompt",
                    help="field holding the prompt text (its hash identifies the prompt across steps)")
    js.add_argument("--prompt-id-field", default=None,
                    help="field holding a prompt id, when the dump has one and no prompt text")
    js.add_argument("--response-field", default="response", help="field holding the response text")
    js.add_argument("--length-field", default="response_length",
                    help="field holding the response length in tokens")
    js.add_argument("--prompt-len-field", default=None,
                    help="field holding the prompt length in tokens "
                         "(else --tokenize or --default-prompt-len)")
    js.add_argument("--finished-field", default=None, help="default: finished = length < cap")
    js.add_argument("--default-prompt-len", type=int, default=None,
                    help="prompt length for every record, when the dump has none and is not tokenized")
    js.add_argument("--tokenize", action="store_true", help="count tokens with real_backend's tokenizer "
                    "and store token ids")
    js.add_argument("--tokenizer", default=None, help="tokenizer name for real_backend.load_tokenizer")
    js.add_argument("--model", default="", help="the model that generated the dump (metadata)")
    js.add_argument("--temperature", type=float, default=1.0,
                    help="sampling temperature of the dump (metadata)")
    js.set_defaults(func=_import_jsonl)

    m = tsub.add_parser("match", help="add match_<drafter>/conf_<drafter> columns (needs token ids)")
    m.add_argument("trace")
    m.add_argument("--drafter", required=True, help="drafter name (see policies.DRAFTERS)")
    m.add_argument("--window", type=int, default=None, help="history window in RL steps")
    m.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="drafter parameter (repeatable); values parsed as JSON when possible")
    m.add_argument("--out", required=True, help="output trace with the match columns (.parquet)")
    m.set_defaults(func=_match)

    i = tsub.add_parser("info", help="validate a trace and show its metadata and columns")
    i.add_argument("trace")
    i.set_defaults(func=_info)


def _synth(args: argparse.Namespace) -> int:
    import os

    from specroll.core.progress import progress, say
    from specroll.traces import get_preset, read_meta, synthesize_to_file

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
    from specroll.core.fileio import write_json
    from specroll.traces import format_stats, read_trace, trace_stats

    trace = read_trace(args.trace)
    stats = trace_stats(trace)
    print(f"{args.trace}  ({trace.meta.source})")
    print(format_stats(stats))
    if args.json:
        write_json(args.json, stats)
        print(f"wrote {args.json}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from specroll.traces import plot_trace, read_trace

    trace = read_trace(args.trace)
    for path in plot_trace(trace, args.out):
        print(f"wrote {path}")
    return 0


def _import_servegen(args: argparse.Namespace) -> int:
    from specroll.core.progress import say
    from specroll.traces import (
        load_servegen_pmf,
        read_trace,
        servegen_preset,
        synthesize_to_file,
        trace_stats,
    )

    say("reading ServeGen distributions")
    preset = servegen_preset(args.data)
    pmf = load_servegen_pmf(args.data)
    rows = synthesize_to_file(args.out, preset, args.prompts, args.samples, args.steps, args.seed)
    stats = trace_stats(read_trace(args.out, columns=[]))
    q = pmf.quantile([0.5, 0.9, 0.99])
    print(f"wrote {args.out}: {rows:,} rollouts, cap {preset.max_response_len}")
    print(f"  ServeGen DeepSeek-R1 marginal  p50 {q[0]}  p90 {q[1]}  p99 {q[2]}  mean {pmf.mean():.0f}")
    print(f"  synthesized trace              p50 {stats['p50']:.0f}  p90 {stats['p90']:.0f}  "
          f"p99 {stats['p99']:.0f}  mean {stats['mean']:.0f}")
    return 0


def _import_jsonl(args: argparse.Namespace) -> int:
    from specroll.traces import JsonlFields, import_jsonl, write_trace

    fields = JsonlFields(step=args.step_field, group=args.group_field, prompt=args.prompt_field,
                         prompt_id=args.prompt_id_field, response=args.response_field,
                         response_len=args.length_field, prompt_len=args.prompt_len_field,
                         finished=args.finished_field)
    encode = None
    if args.tokenize:
        from specroll.real_backend import load_tokenizer

        tok = load_tokenizer(args.tokenizer) if args.tokenizer else load_tokenizer()
        encode = tok.encode
    trace = import_jsonl(args.file, cap=args.cap, fields=fields, encode=encode,
                         default_prompt_len=args.default_prompt_len,
                         model=args.model, temperature=args.temperature)
    write_trace(trace, args.out)
    print(f"wrote {args.out}: {len(trace):,} rollouts, {len(trace.steps)} steps, "
          f"{len(set(trace.column('prompt_id').tolist())):,} prompts, columns {trace.columns}")
    return 0


def _match(args: argparse.Namespace) -> int:
    from specroll.core.progress import say
    from specroll.policies import compute_match_lengths
    from specroll.traces import read_trace, write_trace

    trace = read_trace(args.trace)
    for col in ("token_ids", "prompt_token_ids"):
        if not trace.has(col):
            raise SpecrollError(f"the trace has no '{col}' column", file=args.trace, field=col,
                                fix="match lengths need token ids: record the trace with the real backend "
                                "or import it with --tokenize")
    params = parse_pairs(args.param)
    if args.window is not None:
        params["window"] = args.window
    say(f"computing match lengths of drafter '{args.drafter}' over {len(trace):,} rollouts")
    out = compute_match_lengths(trace, args.drafter, **params)
    write_trace(out, args.out)
    print(f"wrote {args.out}: {len(out):,} rollouts, drafters {out.drafters}")
    return 0


def _info(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from specroll.traces import read_trace

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
