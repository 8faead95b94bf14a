"""`specroll report DIR --out REPORT_DIR`: one self-contained HTML page for specroll outputs.

    specroll report out/ref --out out/ref-report            # one simulation
    specroll report out/policies --out out/policies-report  # a folder of runs, one section each
    specroll report out/validate --out out/validate-report  # sim-vs-real parity and errors

DIR may be the --out folder of simulate, plan, tune, rollout or validate, a folder holding several
(any depth up to 4), or a trace .parquet file. Writes REPORT_DIR/index.html (images embedded, inline
CSS, no JavaScript or network) and the PNGs beside it. See docs/report.md.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="HTML report (plots, tables) of simulate/plan/tune/rollout/validate "
                       "outputs", description="Render one self-contained HTML page (and PNGs) for the "
                       "specroll outputs in DIR.")
    p.add_argument("dir", help="an output folder of specroll, a folder of several, or a trace .parquet")
    p.add_argument("--out", required=True, help="report folder (index.html + PNGs)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from specroll.analysis import build_report

    res = build_report(args.dir, args.out)
    width = max([len(r.name) for r in res.runs] + [3])
    failed = {id(r): msg for r, msg in res.failed}
    print(f"specroll report: {len(res.runs)} output(s) in {args.dir}")
    for r in res.runs:
        status = f"FAILED: {failed[id(r)]}" if id(r) in failed else "ok"
        print(f"  {r.kind:<9} {r.name:<{width}}  {status}")
    print(f"wrote {res.index} ({len(res.pngs)} PNGs beside it)")
    if res.failed:  # the page is written, but incomplete: say so where errors go, and exit 1
        print(f"specroll: error: {len(res.failed)} of {len(res.runs)} output(s) could not be rendered: "
              + "; ".join(f"{r.name}: {msg}" for r, msg in res.failed), file=sys.stderr)
        return 1
    return 0
