"""The `specroll` command line.

Each subcommand lives in its own module under :mod:`specroll.commands` and exposes
``register(subparsers)``; modules are discovered automatically, so adding a command never edits
this file. Command modules import heavy libraries (torch, matplotlib) inside their handlers so
that `specroll --help` stays fast.

Errors: a :class:`SpecrollError` prints its one-line message and exits 2, with no traceback; Ctrl-C
prints one line and exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from specroll import commands
from specroll.core import __version__
from specroll.core.errors import SpecrollError

# What the [real] extra installs: simulate, tune, plan and report never import these.
_REAL_EXTRA = ("torch", "gguf", "tokenizers", "jinja2")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (their examples keep their lines); every flag's help ends with its
    default, unless the default is nothing (None, False, an empty list) or the help says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default in (None, False, argparse.SUPPRESS) or default == [] or "default" in text.lower()
                or not action.option_strings):
            return text
        return f"{text} (default: {default})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specroll", formatter_class=HelpFormatter,
        description="Simulate, tune and validate speculative decoding for RL rollouts.",
    )
    parser.add_argument("--version", action="version", version=f"specroll {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"specroll.commands.{info.name}")
        module.register(sub)
    for p in all_parsers(parser):  # one look for every command, whoever built its parser
        p.formatter_class = HelpFormatter
    return parser


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every sub-command parser below it."""
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                out += all_parsers(child)
    return out


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
    except KeyboardInterrupt as exc:
        # One line, no traceback; a command that keeps partial work says what it kept (tune).
        print(f"specroll: interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
