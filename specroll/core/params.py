"""Parameters of pluggable components as dataclasses, built from keyword arguments with one clear
error for an unknown name or a bad value (policies, drafters, acceptance rules share this)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

from specroll.core.config import parse
from specroll.core.errors import SpecrollError


def build_params(params_cls: type, params: dict[str, Any], *, owner: str, field: str) -> Any:
    """``params_cls(**params)``; ``owner`` names the component in errors (e.g. "policy 'das'"),
    ``field`` is the config field the parameters came from."""
    fields = {f.name for f in dataclasses.fields(params_cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise SpecrollError(f"{owner} has no parameter {', '.join(repr(u) for u in unknown)}", field=field,
                            fix=f"use parameters among: {', '.join(sorted(fields)) or '(none)'}")
    checked = parse(params_cls, params, prefix=field)  # types and declared ranges
    try:
        return params_cls(**{k: getattr(checked, k) for k in params})
    except (TypeError, ValueError) as exc:
        raise SpecrollError(f"{owner}: {exc}", field=field) from None


def check_number(value: Any, name: str, *, integer: bool = False, lo: float | None = None,
                 hi: float | None = None, fix: str | None = None) -> None:
    """Raise one clear SpecrollError unless ``value`` is a finite number (an integer if ``integer``;
    booleans never count) within [lo, hi]; ``name`` is the parameter's field."""
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(float(value))
    ok = ok and (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        what = "an integer" if integer else "a number"
        if lo is not None and hi is not None:
            what += f" in [{lo:g}, {hi:g}]"
        elif lo is not None:
            what += f" >= {lo:g}"
        elif hi is not None:
            what += f" <= {hi:g}"
        raise SpecrollError(f"{name} must be {what}, got {value!r}", field=name, fix=fix)
