"""The `specroll` command line.

Each subcommand lives in its own module under :mod:`specroll.commands` and exposes
``register(subparsers)``; modules are discovered automatically, so adding a command never edits
this file. Command modules import heavy libraries (torch, matplotlib) inside their handlers so
that `specroll --help` stays fast.

Errors: a :class:`SpecrollError` prints its one-line message and exits 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from specroll import commands
from specroll.core.errors import SpecrollError

# What the [real] extra installs: simulate, tune, plan and report never import these.
_REAL_EXTRA = ("torch", "gguf", "tokenizers", "jinja2")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specroll",
        description="Simulate, tune and validate speculative decoding for RL rollouts.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"specroll.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except SpecrollError as exc:
        print(f"specroll: error: {exc.message}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name not in _REAL_EXTRA:
            raise
        print(f"specroll: error: `specroll {args.command}` runs the real backend, which needs {exc.name}. "
              "Fix: pip install 'specroll[real]'.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("specroll: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
