"""`specroll main --out DIR`: the main job on embedded defaults (what `make run` runs).

    specroll main --out out/main
    specroll main --out out/main --config my.toml          # override any stage's defaults
    specroll main --out out/main --skip validate --skip tune

Synthesizes an RL trace, simulates AR and every speculation family on a what-if cluster (8 H100
engines, a 7B model), tunes one family briefly, validates against the real SmolLM2-135M on this
CPU, writes an HTML report, and prints one screen of results. See analysis/_mainjob.py.
"""

from __future__ import annotations

import argparse
import time

STAGES = ("tune", "validate", "report")  # the stages --skip may leave out (analysis.MAIN_STAGES)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("main", help="the main job on embedded defaults (what `make run` runs)",
                       description="Synthesize, simulate every policy family, tune, validate on the real "
                                   "model, and report, on embedded defaults.")
    p.add_argument("--out", default="out/main", help="output folder (default out/main)")
    p.add_argument("--config", default=None, help="TOML overriding the defaults (tables: trace, cluster, "
                                                  "policies, tune, validate)")
    p.add_argument("--skip", action="append", default=[], choices=STAGES, help="skip a stage (repeatable)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from specroll.analysis import format_main, run_main

    t0 = time.perf_counter()
    summary = run_main(args.out, args.config, skip=tuple(args.skip))
    print(format_main(summary))
    print(f"\nmain job done in {time.perf_counter() - t0:.0f} s; everything is under {args.out}/ "
          f"(each stage's summary in {args.out}/logs/)")
    return 0
