"""Progress bars for long work, on stderr so that stdout keeps the one-screen summary clean."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
# No monitor thread: `specroll tune --workers N` forks, and a fork while another thread runs may
# deadlock the child (the monitor only fixes bars that stall for minutes).
tqdm.monitor_interval = 0


def _disabled() -> bool:
    # SPECROLL_PROGRESS=0 silences bars (tests, CI logs); =1 forces them even without a terminal.
    flag = os.environ.get("SPECROLL_PROGRESS")
    if flag is not None:
        return flag == "0"
    return not sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, *, total: int | float | None = None,
             desc: str = "", unit: str = "it", **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr; silent when stderr is not a terminal unless SPECROLL_PROGRESS=1."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=_disabled(),
                dynamic_ncols=True, leave=False, **kwargs)


def say(msg: str) -> None:
    """A one-line status message on stderr (phase changes of long jobs)."""
    print(msg, file=sys.stderr, flush=True)
