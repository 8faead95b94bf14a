"""``report(dir, out)``: one self-contained HTML page (plus its PNGs) for any specroll output folder.

The folder may be one run (simulate, plan, tune, rollout, validate), a folder holding several, or a
trace file; see :mod:`analysis._kinds` for how each is recognised. The page has an overview table,
comparisons across runs (policies in simulation, policies on the real backend), then one section
per run. A run that cannot be rendered gets a visible error box and the others still render; if
none renders, the first error is raised.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path

from specroll.analysis import _html as H
from specroll.analysis._kinds import Run, discover
from specroll.analysis._sections import Ctx, Section, compare_simulations, plan_section, simulate_section
from specroll.analysis._sections_real import compare_rollouts, rollout_section, validate_section
from specroll.analysis._sections_tune import trace_section, tune_section
from specroll.core.errors import SpecrollError
from specroll.core.fileio import atomic_write
from specroll.core.progress import progress

BUILDERS: dict[str, Callable[[Run, Ctx], Section]] = {
    "simulate": simulate_section,
    "rollout": rollout_section,
    "validate": validate_section,
    "plan": plan_section,
    "tune": tune_section,
    "trace": trace_section,
}
COMPARISONS = (compare_simulations, compare_rollouts)



class ReportResult:
    """What :func:`build_report` made: the page, its PNGs, the runs and the sections that failed."""

    def __init__(self, index: Path, pngs: list[Path], runs: list[Run], failed: list[tuple[Run, str]]) -> None:
        self.index, self.pngs, self.runs, self.failed = index, pngs, runs, failed


def report(dir: str | Path, out: str | Path) -> Path:
    """Write ``out/index.html`` (and the PNGs beside it) for the specroll outputs in ``dir``;
    return the page's path."""
    return build_report(dir, out).index


def build_report(dir: str | Path, out: str | Path) -> ReportResult:
    root, out = Path(dir), Path(out)
    runs, notes = discover(root, skip=out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(out)
    blocks: list[tuple[str, str, str]] = []  # (anchor, toc title, html)
    overview: list[list[str]] = []
    failed: list[tuple[Run, str]] = []
    first_exc: BaseException | None = None
    for i, run in enumerate(progress(runs, desc="report", unit="run")):
        anchor = f"run-{i}"
        try:
            sec = BUILDERS[run.kind](run, ctx)
        except Exception as exc:  # noqa: BLE001 - one bad run must not hide the others; shown on the page
            first_exc = first_exc or exc
            msg = exc.message if isinstance(exc, SpecrollError) else f"{type(exc).__name__}: {exc}"
            failed.append((run, msg))
            detail = "" if isinstance(exc, SpecrollError) else (
                "<details><summary>traceback</summary><pre>" + H.esc(traceback.format_exc())
                + "</pre></details>")
            sec = Section(run.name, str(run.path), H.error(f"Could not render this {run.kind} output: {msg}")
                          + detail, "could not be rendered")
        blocks.append((anchor, f"{run.name} ({run.kind})",
                       H.section(anchor, run.kind, sec.title, sec.subtitle, sec.body)))
        overview.append([f'<a href="#{anchor}">{H.esc(run.name)}</a>', H.esc(run.kind), H.esc(sec.headline)])
    if first_exc is not None and len(failed) == len(runs):
        raise first_exc
    comparisons = []
    for compare in COMPARISONS:
        for sec in compare(runs, ctx):
            anchor = f"compare-{len(comparisons)}"
            html = H.section(anchor, "compare", sec.title, sec.subtitle, sec.body)
            comparisons.append((anchor, sec.title, html))
    body = H.section("overview", "overview", "Runs", f"{len(runs)} output(s) found under {root}",
                     H.table(["run", "kind", "headline"], overview, raw=True, text_cols=(1, 2))
                     + "".join(H.note(n) for n in notes))
    # validation first (it is the verdict), then comparisons across runs, then each run
    n_val = sum(r.kind == "validate" for r in runs)  # runs are sorted with validate first
    ordered = blocks[:n_val] + comparisons + blocks[n_val:]
    body += "".join(html for _, _, html in ordered)
    toc = [("overview", "Runs")] + [(a, t) for a, t, _ in ordered]
    index = out / "index.html"
    with atomic_write(index, "w") as fh:
        fh.write(H.page(f"specroll report: {root.resolve().name or root}", f"source: {root.resolve()}",
                        toc, body))
    pngs = [p for p in dict.fromkeys(ctx.pngs) if p.exists()]
    return ReportResult(index, pngs, runs, failed)
