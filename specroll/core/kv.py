"""``KEY=VALUE`` pairs from the command line, with the values read as TOML reads them.

One parser for every flag that takes pairs (``--param``, ``--drafter-param``, ``--accept-param``),
so a value means on the command line what it means in a config file: ``k=4`` is an integer,
``alpha=0.7`` a float, ``confidence=true`` a boolean, ``edges=[0.2, 0.5]`` a list,
``name="x"`` or a bare ``name=x`` a string.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from typing import Any

from specroll.core.errors import SpecrollError


def parse_value(text: str) -> Any:
    """A TOML value; text that is not one (a bare word) is the string itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_pairs(pairs: Iterable[str] | None, flag: str = "--param") -> dict[str, Any]:
    """``["k=4", "mode=schedule"]`` -> ``{"k": 4, "mode": "schedule"}``; a later key wins."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SpecrollError(f"'{pair}' is not KEY=VALUE", field=flag, fix=f"write {flag} name=value")
        out[key.strip()] = parse_value(value.strip())
    return out
