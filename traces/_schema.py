"""Trace schema, version 1: column types, metadata, and validation of a table against them.

One row per rollout. The layout is fixed in docs/architecture.md ("Trace schema"); this module is
its single executable definition. Validation is vectorized (numpy over whole columns) so that a
million-row trace checks in well under a second, and it raises one :class:`SpecrollError` naming
the file, the column and the fix for the first problem it finds.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from specroll.core.errors import SpecrollError

SCHEMA_VERSION = 1
META_KEY = b"specroll"

#: Columns every trace has, with their exact Arrow types.
REQUIRED_COLUMNS: dict[str, pa.DataType] = {
    "step": pa.int32(),
    "prompt_id": pa.int64(),
    "sample": pa.int32(),
    "prompt_len": pa.int32(),
    "response_len": pa.int32(),
    "finished": pa.bool_(),
}

#: Optional list columns with fixed names: name -> element type.
OPTIONAL_LIST_COLUMNS: dict[str, pa.DataType] = {
    "prompt_token_ids": pa.int32(),
    "token_ids": pa.int32(),
}

#: Per-drafter list columns: prefix -> element type. The suffix after the prefix is the drafter.
DRAFTER_PREFIXES: dict[str, pa.DataType] = {
    "match_": pa.int16(),
    "conf_": pa.float32(),
}


def list_element_type(name: str) -> pa.DataType | None:
    """Element type of an optional list column ``name``, or None when the name is not in the schema."""
    if name in OPTIONAL_LIST_COLUMNS:
        return OPTIONAL_LIST_COLUMNS[name]
    for prefix, typ in DRAFTER_PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return typ
    return None


def drafter_of(name: str) -> str | None:
    """The drafter named by a ``match_<d>``/``conf_<d>`` column, else None."""
    for prefix in DRAFTER_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix):]
    return None


def column_type(name: str, n_values: int = 0) -> pa.DataType:
    """The Arrow type a column named ``name`` is stored with (large lists past 2**31 values)."""
    if name in REQUIRED_COLUMNS:
        return REQUIRED_COLUMNS[name]
    elem = list_element_type(name)
    if elem is None:
        raise KeyError(name)
    return pa.large_list(elem) if n_values >= 2**31 - 1 else pa.list_(elem)


@dataclass
class TraceMeta:
    """Trace-level metadata, stored as JSON in the Parquet key-value metadata under ``specroll``.

    ``extra["drafters"]`` maps each drafter with a ``match_``/``conf_`` column to
    ``{"kind": str, "params": dict, "kmax": int}``.
    """

    max_response_len: int
    source: str = ""
    model: str = ""
    temperature: float = 1.0
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        # sort_keys: the same metadata always serializes to the same bytes (bit-identical files).
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False).encode()

    @classmethod
    def from_json(cls, raw: bytes | str, *, file: str | Path | None = None) -> TraceMeta:
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SpecrollError("trace metadata is not valid JSON", file=file, field="specroll",
                                fix="rewrite the file with traces.write_trace") from None
        if not isinstance(data, dict):
            raise SpecrollError("trace metadata is not a JSON object", file=file, field="specroll",
                                fix="rewrite the file with traces.write_trace")
        return cls.from_dict(data, file=file)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, file: str | Path | None = None) -> TraceMeta:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SpecrollError(f"unknown trace schema version {version!r} (this specroll reads "
                                f"version {SCHEMA_VERSION})", file=file, field="schema_version",
                                fix="regenerate the trace with this version of specroll")
        known = {"max_response_len", "source", "model", "temperature", "schema_version", "extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecrollError(f"unknown metadata keys {unknown}", file=file, field="specroll",
                                fix=f"keep only {sorted(known)}; put anything else under 'extra'")
        if "max_response_len" not in data:
            raise SpecrollError("metadata lacks the response cap", file=file, field="max_response_len",
                                fix="set max_response_len (the generation cap in tokens)")
        meta = cls(**data)
        meta.check(file=file)
        return meta

    def check(self, *, file: str | Path | None = None) -> None:
        """Validate the metadata values themselves."""
        if self.schema_version != SCHEMA_VERSION:
            raise SpecrollError(f"unknown trace schema version {self.schema_version!r}", file=file,
                                field="schema_version", fix=f"use version {SCHEMA_VERSION}")
        cap = self.max_response_len
        if isinstance(cap, bool) or not isinstance(cap, int | np.integer) or cap <= 0:
            raise SpecrollError(f"max_response_len must be a positive integer, got {cap!r}", file=file,
                                field="max_response_len", fix="set the generation cap in tokens")
        temp = self.temperature
        if not isinstance(temp, int | float) or isinstance(temp, bool) or not math.isfinite(temp) or temp < 0:
            raise SpecrollError(f"temperature must be a finite number >= 0, got {temp!r}", file=file,
                                field="temperature", fix="set the sampling temperature")
        for key in ("source", "model"):
            if not isinstance(getattr(self, key), str):
                raise SpecrollError(f"{key} must be a string", file=file, field=key, fix="use a string")
        if not isinstance(self.extra, dict):
            raise SpecrollError("extra must be a JSON object", file=file, field="extra", fix="use a dict")
        drafters = self.extra.get("drafters", {})
        if not isinstance(drafters, dict):
            raise SpecrollError("extra.drafters must map drafter names to their settings", file=file,
                                field="extra.drafters", fix='use {"name": {"kind": ..., "params": {...}, '
                                '"kmax": int}}')
        for name, spec in drafters.items():
            kmax = spec.get("kmax") if isinstance(spec, dict) else None
            if isinstance(kmax, bool) or not isinstance(kmax, int) or kmax <= 0:
                raise SpecrollError(f"drafter '{name}' needs a positive integer kmax, got {kmax!r}",
                                    file=file, field=f"extra.drafters.{name}.kmax",
                                    fix="record the drafter's maximum proposal length")

    def kmax(self, drafter: str) -> int:
        return int(self.extra["drafters"][drafter]["kmax"])


def _fail(what: str, file: str | Path | None, column: str, fix: str) -> SpecrollError:
    return SpecrollError(what, file=file, field=column, fix=fix)


def _first_rows(mask: np.ndarray, limit: int = 5) -> str:
    rows = np.flatnonzero(mask)[:limit].tolist()
    return f"rows {rows}" + (" ..." if int(mask.sum()) > limit else "")


def check_columns(schema: pa.Schema, *, file: str | Path | None = None) -> None:
    """Column names and types only (cheap; also used for each batch of a streaming writer)."""
    names = schema.names
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _fail(f"duplicate columns {dup}", file, dup[0], "keep one column of each name")
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise _fail(f"missing required column(s) {missing}", file, missing[0],
                    f"a trace needs the columns {list(REQUIRED_COLUMNS)}")
    extra = [c for c in names if c not in REQUIRED_COLUMNS and list_element_type(c) is None]
    if extra:
        raise _fail(f"unexpected column(s) {extra}", file, extra[0],
                    "drop them, or name per-drafter columns match_<drafter> / conf_<drafter>; optional "
                    f"columns are {list(OPTIONAL_LIST_COLUMNS)}")
    for f in schema:
        if f.name in REQUIRED_COLUMNS:
            want = REQUIRED_COLUMNS[f.name]
            if f.type != want:
                raise _fail(f"has type {f.type}, expected {want}", file, f.name,
                            f"cast the column to {want}")
        else:
            elem = list_element_type(f.name)
            ok = (pa.types.is_list(f.type) or pa.types.is_large_list(f.type)) and f.type.value_type == elem
            if not ok:
                raise _fail(f"has type {f.type}, expected list<{elem}>", file, f.name,
                            f"store it as a list of {elem}")


def _ragged(col: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(flat values honouring slices, offsets int64 starting at 0) of a list column."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    offsets = arr.offsets.to_numpy().astype(np.int64, copy=False)
    offsets = offsets - offsets[0]
    return arr.flatten(), offsets


def validate_table(table: pa.Table, meta: TraceMeta, *, file: str | Path | None = None,
                   check_keys: bool = True) -> None:
    """Check ``table`` against the schema and ``meta``; raise one SpecrollError for the first problem.

    ``check_keys=False`` skips the duplicate (step, prompt_id, sample) check, for streaming writers
    that check keys once over all batches.
    """
    meta.check(file=file)
    check_columns(table.schema, file=file)
    if table.num_rows == 0:
        raise _fail("the trace has no rows", file, "response_len", "write at least one rollout")
    for name in table.column_names:
        if table.column(name).null_count:
            raise _fail(f"{table.column(name).null_count} missing (null) values", file, name,
                        "fill or drop the rows with missing values")
    cap = int(meta.max_response_len)
    step = table.column("step").to_numpy()
    sample = table.column("sample").to_numpy()
    plen = table.column("prompt_len").to_numpy()
    rlen = table.column("response_len").to_numpy()
    if (bad := step < 0).any():
        raise _fail(f"negative RL step at {_first_rows(bad)}", file, "step", "steps count from 0")
    if (bad := sample < 0).any():
        raise _fail(f"negative sample index at {_first_rows(bad)}", file, "sample",
                    "samples are numbered from 0 within a prompt's group")
    if (bad := plen <= 0).any():
        raise _fail(f"zero or negative prompt length at {_first_rows(bad)}", file, "prompt_len",
                    "prompt lengths are token counts > 0")
    if (bad := rlen <= 0).any():
        raise _fail(f"zero or negative response length at {_first_rows(bad)}", file, "response_len",
                    "response lengths are token counts >= 1; drop empty responses")
    if (bad := rlen > cap).any():
        raise _fail(f"response length above the cap max_response_len={cap} at {_first_rows(bad)}",
                    file, "response_len", "raise max_response_len in the metadata or drop those rows")
    if check_keys:
        check_unique_keys(step, table.column("prompt_id").to_numpy(), sample, file=file)
    drafters = meta.extra.get("drafters", {})
    for name in table.column_names:
        if name in REQUIRED_COLUMNS:
            continue
        values, offsets = _ragged(table.column(name))
        lengths = np.diff(offsets)
        d = drafter_of(name)
        if name == "prompt_token_ids":
            want, what = plen, "prompt_len"
        elif name.startswith("conf_"):
            if d not in drafters:
                raise _fail(f"drafter '{d}' is not described in the metadata", file, name,
                            f"add extra.drafters.{d} = {{kind, params, kmax}} or drop the column")
            want, what = rlen.astype(np.int64) * meta.kmax(d), f"response_len * kmax ({meta.kmax(d)})"
        else:
            want, what = rlen, "response_len"
        if (bad := lengths != want).any():
            raise _fail(f"list lengths disagree with {what} at {_first_rows(bad)}", file, name,
                        f"each row's list must hold exactly {what} values")
        if name.startswith("match_"):
            if d not in drafters:
                raise _fail(f"drafter '{d}' is not described in the metadata", file, name,
                            f"add extra.drafters.{d} = {{kind, params, kmax}} or drop the column")
            _check_match_values(values.to_numpy(zero_copy_only=False), offsets, meta.kmax(d), file, name)
        elif name.startswith("conf_"):
            v = values.to_numpy(zero_copy_only=False)
            if (bad := ~((v >= 0) & (v <= 1))).any():  # also catches NaN
                raise _fail(f"{int(bad.sum())} values outside [0, 1] or NaN", file, name,
                            "confidences are probabilities in [0, 1] (0 past the proposal's end)")
        elif len(values):
            v = values.to_numpy(zero_copy_only=False)
            if (bad := v < 0).any():
                raise _fail(f"{int(bad.sum())} negative token ids", file, name, "token ids are >= 0")


def _check_match_values(m: np.ndarray, offsets: np.ndarray, kmax: int, file: str | Path | None,
                        name: str) -> None:
    # m_t counts accepted tokens from position t on, so it cannot pass the drafter's kmax
    # nor the tokens left in the response (n - t).
    if (bad := m < 0).any():
        raise _fail(f"{int(bad.sum())} negative match lengths", file, name, "match lengths are >= 0")
    if (bad := m > kmax).any():
        raise _fail(f"{int(bad.sum())} match lengths above the drafter's kmax={kmax}", file, name,
                    "recompute with `specroll trace match` or fix kmax in extra.drafters")
    # Checked in blocks of rows so that a trace with 10^8 positions needs no 10^8-long temporaries.
    n_rows = len(offsets) - 1
    start = 0
    while start < n_rows:
        stop = int(np.searchsorted(offsets, offsets[start] + (1 << 22), side="right"))
        stop = min(max(stop - 1, start + 1), n_rows)
        lo, hi = int(offsets[start]), int(offsets[stop])
        ends = np.repeat(offsets[start + 1:stop + 1], np.diff(offsets[start:stop + 1]))
        if (m[lo:hi] > ends - np.arange(lo, hi)).any():  # ends - t = tokens left at position t
            raise _fail("match lengths run past the end of their response", file, name,
                        "m_t must be <= response_len - t; recompute with `specroll trace match`")
        start = stop


def check_unique_keys(step: np.ndarray, prompt_id: np.ndarray, sample: np.ndarray, *,
                      file: str | Path | None = None) -> None:
    """Raise when a (step, prompt_id, sample) key occurs twice."""
    if len(step) < 2:
        return
    order = np.lexsort((sample, prompt_id, step))
    s, p, k = step[order], prompt_id[order], sample[order]
    same = (s[1:] == s[:-1]) & (p[1:] == p[:-1]) & (k[1:] == k[:-1])
    if same.any():
        i = int(np.flatnonzero(same)[0])
        raise _fail(f"{int(same.sum())} duplicate (step, prompt_id, sample) keys, e.g. "
                    f"({s[i]}, {p[i]}, {k[i]})", file, "sample",
                    "give each rollout of a prompt in a step its own sample index")
