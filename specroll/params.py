"""Parameters of pluggable components as dataclasses, built from keyword arguments with one clear
error for an unknown name or a bad value (policies, drafters, acceptance rules share this)."""

from __future__ import annotations

import dataclasses
from typing import Any

from specroll.errors import SpecrollError


def build_params(params_cls: type, params: dict[str, Any], *, owner: str, field: str) -> Any:
    """``params_cls(**params)``; ``owner`` names the component in errors (e.g. "policy 'das'"),
    ``field`` is the config field the parameters came from."""
    fields = {f.name for f in dataclasses.fields(params_cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise SpecrollError(f"{owner} has no parameter {', '.join(repr(u) for u in unknown)}", field=field,
                            fix=f"use parameters among: {', '.join(sorted(fields)) or '(none)'}")
    try:
        return params_cls(**params)
    except (TypeError, ValueError) as exc:
        raise SpecrollError(f"{owner}: {exc}", field=field) from None
