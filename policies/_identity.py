"""What a study measures, recorded in the study itself so that two different objectives never mix.

A study's identity is a JSON object in its user attributes (key ``identity``): the readable fields
(family, pins, search space, specroll version and whatever the objective says about itself: config,
traces, seeds, steps, profile, objective definition) and ``hash``, a SHA-256 over all of them but
the ones that only help a reader (``config_file``: the same config may sit at another path on
another machine). Resuming a study whose identity differs is one error that names the differences.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from specroll.core import __version__
from specroll.core.errors import SpecrollError
from specroll.core.fileio import to_jsonable

ATTR = "identity"
_UNHASHED = ("hash", "config_file")


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data (tuples as lists), so stored and fresh identities compare equal."""
    return json.loads(json.dumps(to_jsonable(value), sort_keys=True))


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(canonical(value), sort_keys=True).encode()).hexdigest()


def study_identity(family: str, pins: dict[str, Any], space: dict[str, Any],
                   objective: dict[str, Any] | None = None) -> dict[str, Any]:
    """The identity of a study of ``family`` with these pins and search space; ``objective``: what
    the objective says it measures (readable fields)."""
    ident = canonical({**(objective or {}), "family": family, "pins": pins, "search_space": space,
                       "specroll_version": __version__})
    ident["hash"] = digest({k: v for k, v in ident.items() if k not in _UNHASHED})
    return ident


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flat(v, key) if isinstance(v, dict) and v else {key: v})
    return out


def _short(v: Any) -> str:
    text = "(none)" if v is _MISSING else json.dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."


_MISSING = object()


def differences(old: dict[str, Any], new: dict[str, Any], limit: int = 4) -> list[str]:
    """``KEY: OLD -> NEW`` for each field that differs (hash and reader-only fields left out)."""
    a, b = _flat({k: v for k, v in old.items() if k not in _UNHASHED}), _flat(
        {k: v for k, v in new.items() if k not in _UNHASHED})
    keys = sorted(set(a) | set(b), key=lambda k: (k.startswith(("resolved", "search_space")), k))
    diffs = [f"{k}: {_short(a.get(k, _MISSING))} -> {_short(b.get(k, _MISSING))}"
             for k in keys if a.get(k, _MISSING) != b.get(k, _MISSING)]
    if len(diffs) > limit:
        diffs = diffs[:limit] + [f"and {len(diffs) - limit} more"]
    return diffs


def check_identity(stored: dict[str, Any] | None, new: dict[str, Any], *, study: str, where: str,
                   n_trials: int) -> None:
    """Raise one clear error when a study that holds trials measured something else."""
    if stored is None:
        if n_trials:
            raise SpecrollError(f"study '{study}' in {where} holds {n_trials} trial(s) but no record of what "
                                "they measured (made by an older specroll)", field="--study",
                                fix="pass a new --study name or another --out to start a study of this "
                                    "objective")
        return
    if stored.get("hash") == new["hash"]:
        return
    diffs = differences(stored, new) or ["the identity hash"]
    raise SpecrollError(f"study '{study}' in {where} measures something else than this run "
                        f"({'; '.join(diffs)})", field="--study",
                        fix="pass a new --study name or another --out to start a new study, or re-run with "
                            "the study's own config, pins and version to resume it")
