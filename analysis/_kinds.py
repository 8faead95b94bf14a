"""Which specroll outputs a directory holds: recognise each run folder by the files its command writes.

| kind     | written by          | recognised by                                                     |
| -------- | ------------------- | ----------------------------------------------------------------- |
| validate | `specroll validate` | summary.json with ``"kind": "validate"`` (or comparison.parquet)  |
| simulate | `specroll simulate` | summary.json with ``rollout_s`` + ``engines``, or engines.parquet |
|          |                     | / requests.parquet                                                |
| rollout  | `specroll rollout`  | summary.json with ``config`` + per-step ``makespan_s`` list, or   |
|          |                     | iterations.parquet                                                |
| plan     | `specroll plan`     | plan.json                                                         |
| tune     | `specroll tune`     | tune_summary.json, or history.parquet / study.db / best_policy.json|
| trace    | anything            | a .parquet file with specroll trace metadata that no run above   |
|          |                     | claims (a rollout's trace.parquet belongs to the rollout)         |

A folder may hold several runs (one per sub-folder, any depth up to :data:`MAX_DEPTH`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specroll.core.errors import SpecrollError

MAX_DEPTH = 4
KINDS = ("validate", "simulate", "rollout", "plan", "tune", "trace")
# The files each kind reads: they are "claimed", so that a rollout's trace.parquet is not also
# reported as a stand-alone trace.
CLAIMS = {
    "validate": ("summary.json", "comparison.parquet", "trace.parquet"),
    "simulate": ("summary.json", "requests.parquet", "engines.parquet"),
    "rollout": ("summary.json", "iterations.parquet", "trace.parquet"),
    "plan": ("plan.json",),
    "tune": ("tune_summary.json", "history.parquet", "study.db", "best_policy.json"),
}
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages"}


@dataclass
class Run:
    kind: str
    path: Path
    """the run's folder (or the trace file, for kind 'trace')."""
    name: str
    """path relative to the report's root ('.' for the root itself)."""
    summary: dict[str, Any] | None = None
    """summary.json when the kind has one and it parsed (None when missing)."""
    problems: list[str] = field(default_factory=list)
    """what could not be read while recognising the run (shown on the page)."""


def _read_summary(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    if not path.exists():
        return None, None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"{path.name} is not valid JSON ({exc})"
    if not isinstance(data, dict):
        return None, f"{path.name} is not a JSON object"
    return data, None


def _summary_kind(s: dict[str, Any]) -> str | None:
    if s.get("kind") == "validate":
        return "validate"
    if isinstance(s.get("kind"), str) and s["kind"] in KINDS:
        return s["kind"]
    if "rollout_s" in s and "engines" in s:
        return "simulate"
    if "config" in s and isinstance(s.get("makespan_s"), list):
        return "rollout"
    return None


def detect(folder: Path) -> tuple[list[str], dict[str, Any] | None, list[str]]:
    """The run kinds found directly in ``folder``, its parsed summary.json, and problems."""
    kinds: list[str] = []
    problems: list[str] = []
    summary, problem = _read_summary(folder / "summary.json")
    if problem:
        problems.append(problem)
    by_summary = _summary_kind(summary) if summary is not None else None
    has = {p.name for p in folder.iterdir() if p.is_file()}
    if by_summary == "validate" or (by_summary is None and "comparison.parquet" in has):
        kinds.append("validate")
    elif by_summary == "simulate" or (by_summary is None and has & {"engines.parquet", "requests.parquet"}):
        kinds.append("simulate")
    elif by_summary == "rollout" or (by_summary is None and "iterations.parquet" in has):
        kinds.append("rollout")
    elif summary is not None and by_summary is None:
        problems.append("summary.json is from no command this report knows (simulate, rollout, validate)")
    if "plan.json" in has:
        kinds.append("plan")
    if "tune_summary.json" in has or has & {"history.parquet", "study.db"}:
        kinds.append("tune")
    return kinds, summary, problems


def _is_trace(path: Path) -> bool:
    from specroll.traces import read_meta

    try:
        read_meta(path)
    except SpecrollError:
        return False
    except Exception:  # noqa: BLE001 - not Parquet at all (pyarrow raises many types)
        return False
    return True


def _folders(root: Path, skip: Path | None) -> list[Path]:
    """``root`` and its sub-folders up to MAX_DEPTH, sorted, without hidden ones and ``skip``."""
    out = [root]
    frontier = [root]
    for _ in range(MAX_DEPTH):
        nxt = []
        for d in frontier:
            try:
                children = sorted(p for p in d.iterdir() if p.is_dir())
            except OSError:
                continue
            for c in children:
                if c.name.startswith(".") or c.name in _SKIP_DIRS:
                    continue
                if skip is not None and c.resolve() == skip:
                    continue
                nxt.append(c)
        out += nxt
        frontier = nxt
    return out


def _name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return rel if rel != "." else (root.resolve().name or ".")


def discover(root: str | Path, *, skip: str | Path | None = None) -> tuple[list[Run], list[str]]:
    """Every run under ``root`` (a run folder, a folder of runs, or a trace file), and notes about
    folders that looked like outputs but could not be recognised. ``skip`` (the report's own
    output folder) is not searched.

    Raises :class:`SpecrollError` when ``root`` does not exist or holds no specroll output.
    """
    root = Path(root)
    fix = ("pass the --out folder of specroll simulate / plan / tune / rollout / validate, a folder "
           "holding several of them, or a trace .parquet file")
    if not root.exists():
        raise SpecrollError("no such file or directory", file=root, fix=fix)
    if root.is_file():
        if root.suffix == ".parquet" and _is_trace(root):
            return [Run("trace", root, root.name)], []
        raise SpecrollError("not a specroll output folder or trace file", file=root, fix=fix)
    skip_path = Path(skip).resolve() if skip is not None else None
    runs: list[Run] = []
    notes: list[str] = []
    claimed: set[Path] = set()
    for folder in _folders(root, skip_path):
        kinds, summary, problems = detect(folder)
        name = _name(folder, root)
        for kind in kinds:
            runs.append(Run(kind, folder, name, summary if kind in CLAIMS and "summary.json" in CLAIMS[kind]
                            else None, list(problems)))
            claimed |= {(folder / f).resolve() for f in CLAIMS[kind]}
        if not kinds and problems:
            notes.append(f"{name}: " + "; ".join(problems))
    for folder in _folders(root, skip_path):
        for f in sorted(folder.glob("*.parquet")):
            if f.resolve() not in claimed and _is_trace(f):
                runs.append(Run("trace", f, _name(f, root)))
    if not runs:
        raise SpecrollError("no specroll output found here" + (f" ({notes[0]})" if notes else ""),
                            file=root, fix=fix)
    runs.sort(key=lambda r: (KINDS.index(r.kind), r.name))
    return runs, notes
