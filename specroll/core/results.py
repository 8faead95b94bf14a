"""Typed result summaries: every summary.json says what wrote it (``kind``) and in which layout
(``schema_version``), so a reader (the report, a notebook) dispatches on the kind instead of
guessing from which files exist, and a renamed key fails where it is written, not where it is
read ("-" in a table).

Each package declares its summary as a :class:`Summary` subclass registered under its kind:

    @register_summary
    class SimSummary(Summary):
        kind: Literal["simulate"] = "simulate"
        makespan_s: float
        ...

``read_summary(path)`` returns the registered class's instance (``extra="forbid"``: a file with a
key its model does not declare is refused with the key named).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from specroll.core import __version__
from specroll.core.errors import SpecrollError
from specroll.core.fileio import write_json

SCHEMA_VERSION = 1
_KINDS: dict[str, type[Summary]] = {}


class Record(BaseModel):
    """A typed record read as its JSON keys too (``rec["tokens"]`` is ``rec.tokens``); an unknown
    key raises KeyError (never a silent default)."""

    model_config = ConfigDict(extra="forbid")

    def __getitem__(self, key: str) -> Any:
        """``summary["makespan_s"]`` as well as ``summary.makespan_s``: the JSON's own key names."""
        try:
            return getattr(self, key)
        except AttributeError:
            extra = self.__pydantic_extra__ or {}
            if key in extra:
                return extra[key]
            raise KeyError(key) from None

    def __contains__(self, key: object) -> bool:
        extra = self.__pydantic_extra__ or {}
        return isinstance(key, str) and (key in type(self).model_fields or key in extra)


class Summary(Record):
    """Base of every result summary; ``kind`` and ``schema_version`` lead the JSON file."""

    kind: str
    schema_version: int = SCHEMA_VERSION
    specroll_version: str = __version__

    def to_json(self) -> dict[str, Any]:
        """The JSON form: plain data, ``kind`` first."""
        return self.model_dump(mode="json")

    def write(self, path: str | Path) -> Path:
        return write_json(path, self.to_json())


def register_summary(cls: type[Summary]) -> type[Summary]:
    """Class decorator: ``cls`` reads summaries of its ``kind`` (the field's default)."""
    kind = cls.model_fields["kind"].default
    if not isinstance(kind, str) or kind in _KINDS:
        raise ValueError(f"summary kind {kind!r} missing or registered twice")
    _KINDS[kind] = cls
    return cls


def summary_kinds() -> list[str]:
    return sorted(_KINDS)


def parse_summary(data: Any, *, file: str | Path | None = None) -> Summary:
    """The typed summary of ``data`` (a summary.json's content), by its ``kind``."""
    if not isinstance(data, dict):
        raise SpecrollError("not a JSON object", file=file, fix="pass a summary.json written by specroll")
    kind = data.get("kind")
    if kind is None:
        raise SpecrollError("no 'kind': not a specroll summary, or one written before summaries were typed",
                            file=file, field="kind", fix="run the command again with this version")
    cls = _KINDS.get(kind)
    if cls is None:
        raise SpecrollError(f"unknown summary kind '{kind}'", file=file, field="kind",
                            fix=f"known kinds: {', '.join(summary_kinds()) or 'none loaded'}")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise SpecrollError(f"schema_version {data.get('schema_version')!r}, this version reads "
                            f"{SCHEMA_VERSION}", file=file, field="schema_version",
                            fix="run the command again with this version of specroll")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(x) for x in err["loc"])
        raise SpecrollError(f"{err['msg']} (a {kind} summary)", file=file, field=where,
                            fix="run the command again with this version of specroll") from None


def read_summary(path: str | Path) -> Summary:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecrollError("file not found", file=path, fix="check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecrollError(f"not valid JSON ({exc})", file=path, fix="pass a summary.json") from None
    return parse_summary(data, file=path)
