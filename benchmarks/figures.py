"""The docs' figures: for each, the JSON it is rendered from, the command that writes that JSON, the
docs that show it, and its renderer (JSON -> markdown). benchmarks/reproduce.py runs, renders and
checks them.

A renderer writes the figure and, under it, where it came from (the JSON, the command, the date and
the machine's load), so a reader can always trace a number to its script.

Each area declares its figures in its own module under ``benchmarks/figs/`` (a module-level
``FIGURES`` tuple and, optionally, ``CHECKED_DOCS``); this module collects them, so areas never edit
one shared list.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    name: str
    json: str
    command: str
    docs: tuple[str, ...]
    render: Callable[[dict[str, Any]], str]


def source_line(data: dict[str, Any], json_path: str) -> str:
    meta = data.get("meta", {})
    load = meta.get("load_before")
    where = f", load {load[0]:.2f}" if load else ""
    return (f"_From `{json_path}`, written by `{meta.get('command', '?')}` on {meta.get('date', '?')} "
            f"({meta.get('cpu', '?')}, {meta.get('cores', '?')} cores{where})._")


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _collect() -> tuple[tuple[Figure, ...], tuple[str, ...]]:
    from benchmarks import figs

    found: list[Figure] = []
    checked: list[str] = []
    for info in sorted(pkgutil.iter_modules(figs.__path__), key=lambda i: i.name):
        mod = importlib.import_module(f"benchmarks.figs.{info.name}")
        found += list(getattr(mod, "FIGURES", ()))
        checked += list(getattr(mod, "CHECKED_DOCS", ()))
    names = [f.name for f in found]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"figure names declared twice: {dup}")
    return tuple(found), tuple(dict.fromkeys(checked))


# Docs in CHECKED_DOCS: every decimal figure in a table must come from a figure block.
FIGURES, CHECKED_DOCS = _collect()
