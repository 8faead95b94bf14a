"""Every figure in the docs from a script: regenerate, render, or check.

    python benchmarks/reproduce.py --check          # docs == what their JSONs render (fast; a test runs it)
    python benchmarks/reproduce.py --render         # rewrite the docs' figure blocks from the JSONs
    python benchmarks/reproduce.py [--only NAME]    # re-run the scripts (long), then render
    python benchmarks/reproduce.py --list           # the figures, their JSONs and commands

A figure is a block in a doc, between ``<!-- figure:NAME -->`` and ``<!-- /figure:NAME -->``, whose
text is rendered from a JSON under docs/results/ (benchmarks/figures.py: one renderer per figure)
that a command writes. ``--check`` fails when a block differs from what its JSON renders, when a
block or its JSON is missing, or when a doc in :data:`figures.CHECKED_DOCS` has a table row with a
decimal figure outside any figure block (a figure typed by hand).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # the benchmarks package; specroll comes from the install
from benchmarks import figures  # noqa: E402

_BLOCK = re.compile(r"(<!-- figure:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /figure:(?P=name) -->)", re.S)
_FIGURE_ROW = re.compile(r"^\|.*\d\.\d")  # a table row holding a decimal figure


def render_doc(text: str, rendered: dict[str, str]) -> tuple[str, list[str]]:
    """``text`` with every known block replaced by its rendering; the names of unknown blocks."""
    unknown: list[str] = []

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in rendered:
            unknown.append(name)
            return m.group(0)
        return m.group(1) + rendered[name].rstrip("\n") + "\n" + m.group(4)

    return _BLOCK.sub(sub, text), unknown


def hand_typed_rows(text: str) -> list[int]:
    """1-based line numbers of table rows with a decimal figure outside every figure block."""
    spans = [(m.start(), m.end()) for m in _BLOCK.finditer(text)]
    out, pos = [], 0
    for i, line in enumerate(text.split("\n"), 1):
        inside = any(a <= pos < b for a, b in spans)
        if not inside and _FIGURE_ROW.match(line):
            out.append(i)
        pos += len(line) + 1
    return out


def render_all() -> tuple[dict[str, str], list[str]]:
    """Each figure's text from its JSON, and the problems (a missing JSON)."""
    out, problems = {}, []
    for fig in figures.FIGURES:
        path = ROOT / fig.json
        if not path.is_file():
            problems.append(f"{fig.json}: missing (run: {fig.command})")
            continue
        out[fig.name] = fig.render(json.loads(path.read_text()))
    return out, problems


def check() -> list[str]:
    rendered, problems = render_all()
    for fig in figures.FIGURES:
        for doc in fig.docs:
            text = (ROOT / doc).read_text()
            if f"<!-- figure:{fig.name} -->" not in text:
                problems.append(f"{doc}: no block for figure '{fig.name}'")
    for doc in sorted({d for f in figures.FIGURES for d in f.docs} | set(figures.CHECKED_DOCS)):
        text = (ROOT / doc).read_text()
        new, unknown = render_doc(text, rendered)
        problems += [f"{doc}: block '{n}' has no figure in benchmarks/figures.py" for n in unknown]
        if new != text:
            a, b = text.split("\n"), new.split("\n")
            line = next((i for i, (x, y) in enumerate(zip(a, b), 1) if x != y), min(len(a), len(b)))
            problems.append(f"{doc}:{line}: differs from what its JSON renders "
                            "(python benchmarks/reproduce.py --render)")
        if doc in figures.CHECKED_DOCS:
            problems += [f"{doc}:{n}: a figure typed by hand (put it in a figure block rendered from a JSON)"
                         for n in hand_typed_rows(text)]
    return problems


def write_rendered() -> list[Path]:
    rendered, problems = render_all()
    for p in problems:
        print(f"skipped: {p}", file=sys.stderr)
    changed = []
    for doc in sorted({d for f in figures.FIGURES for d in f.docs}):
        path = ROOT / doc
        text = path.read_text()
        new, _ = render_doc(text, rendered)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare the docs with their JSONs; exit 1 if off")
    mode.add_argument("--render", action="store_true", help="rewrite the figure blocks from the JSONs")
    mode.add_argument("--list", action="store_true", help="list the figures")
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help="re-run only these figures")
    args = ap.parse_args(argv)
    if args.list:
        for f in figures.FIGURES:
            print(f"{f.name:<20} {f.json:<44} {f.command}   -> {', '.join(f.docs)}")
        return 0
    if args.check:
        problems = check()
        for p in problems:
            print(p)
        print(f"{len(figures.FIGURES)} figures in {len({d for f in figures.FIGURES for d in f.docs})} docs: "
              + ("ok" if not problems else f"{len(problems)} problem(s)"))
        return 1 if problems else 0
    if not args.render:
        done = set()
        for f in figures.FIGURES:
            if (args.only and f.name not in args.only) or f.command in done:
                continue
            print(f"$ {f.command}", flush=True)
            subprocess.run([sys.executable, *shlex.split(f.command)[1:]], cwd=ROOT, check=True)
            done.add(f.command)
    for path in write_rendered():
        print(f"rendered {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
