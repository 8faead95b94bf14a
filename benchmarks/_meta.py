"""What every benchmark JSON records about how it was made: the command (paths relative to the
repository, never a machine's own), the date, the git commit, the machine's CPU and its load."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def rel(path: str | Path) -> str:
    """``path`` relative to the repository when it lies inside it (else its name alone)."""
    p = Path(path).resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return p.name


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_meta(argv: list[str] | None = None) -> dict[str, Any]:
    """The ``meta`` block of a benchmark JSON (call it at the start and keep the load at the end)."""
    argv = sys.argv if argv is None else argv
    cmd = " ".join([rel(argv[0]) if argv and argv[0].endswith(".py") else "python"] + [
        rel(a) if os.path.exists(a) else a for a in argv[1:]])
    return {"command": f"python {cmd}" if not cmd.startswith("python") else cmd,
            "date": _dt.date.today().isoformat(), "commit": _commit(), "cpu": _cpu(),
            "cores": os.cpu_count(), "load_before": list(os.getloadavg())}


def finish(meta: dict[str, Any]) -> dict[str, Any]:
    return {**meta, "load_after": list(os.getloadavg())}
