"""The in-memory trace: an Arrow table of rollouts plus its :class:`TraceMeta`, with numpy accessors.

A Trace is immutable: ``select`` and ``with_ragged_column`` return new traces. Accessors return
numpy arrays (cached) so the simulator and the engine never touch Arrow themselves.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from specroll.core.errors import SpecrollError
from specroll.traces._schema import (
    DRAFTER_PREFIXES,
    REQUIRED_COLUMNS,
    TraceMeta,
    _ragged,
    column_type,
    drafter_of,
    list_element_type,
    validate_table,
)


def _as_list_array(name: str, values: np.ndarray, offsets: np.ndarray) -> pa.Array:
    elem = list_element_type(name)
    if elem is None:
        raise SpecrollError(f"'{name}' is not a list column of the trace schema", field=name,
                            fix="use token_ids, prompt_token_ids, match_<drafter> or conf_<drafter>")
    offsets = np.asarray(offsets, dtype=np.int64)
    values = np.asarray(values)
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(values) \
            or (np.diff(offsets) < 0).any():
        raise SpecrollError("offsets must start at 0, never decrease and end at len(values)", field=name,
                            fix="pass offsets of length n_rows + 1 as returned by Trace.ragged")
    if np.issubdtype(values.dtype, np.floating) and not pa.types.is_floating(elem):
        raise SpecrollError(f"float values for an integer column ({elem})", field=name,
                            fix="pass integer values")
    typ = column_type(name, len(values))
    off_type = pa.int64() if pa.types.is_large_list(typ) else pa.int32()
    flat = pa.array(values.astype(elem.to_pandas_dtype(), copy=False), type=elem)
    cls = pa.LargeListArray if pa.types.is_large_list(typ) else pa.ListArray
    return cls.from_arrays(pa.array(offsets, type=off_type), flat)


class Trace:
    """Rollout rows (``table``) and trace metadata (``meta``); validated on construction."""

    def __init__(self, table: pa.Table, meta: TraceMeta, *, file: str | Path | None = None,
                 validate: bool = True) -> None:
        if validate:
            validate_table(table, meta, file=file)
        self.table = table
        self.meta = meta
        self._cache: dict[str, Any] = {}

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_columns(cls, meta: TraceMeta, columns: Mapping[str, Any], *,
                     file: str | Path | None = None) -> Trace:
        """Build a trace from numpy arrays (required columns, cast to their schema types) and
        optional list columns given either as ``(values, offsets)`` or as a list of sequences."""
        arrays: dict[str, pa.Array] = {}
        for name, col in columns.items():
            if name in REQUIRED_COLUMNS:
                arr = np.asarray(col)
                want = REQUIRED_COLUMNS[name].to_pandas_dtype()
                if arr.dtype.kind == "f" and name != "finished" and (
                        not np.isfinite(arr).all() or (arr != np.round(arr)).any()):
                    raise SpecrollError("non-integer or NaN values", field=name,
                                        fix="pass whole token counts / ids")
                arrays[name] = pa.array(arr.astype(want, copy=False), type=REQUIRED_COLUMNS[name])
            elif isinstance(col, tuple) and len(col) == 2:
                arrays[name] = _as_list_array(name, *col)
            else:
                seqs = [np.asarray(s) for s in col]
                offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
                values = np.concatenate(seqs) if seqs else np.zeros(0)
                arrays[name] = _as_list_array(name, values, offsets)
        return cls(pa.table(arrays), meta, file=file)

    # ---- basic protocol ----------------------------------------------------------------------
    def __len__(self) -> int:
        return self.table.num_rows

    def __repr__(self) -> str:
        return (f"Trace({len(self)} rollouts, steps={len(self.steps)}, cap={self.meta.max_response_len}, "
                f"columns={self.table.column_names}, source={self.meta.source!r})")

    @property
    def columns(self) -> list[str]:
        return list(self.table.column_names)

    @property
    def drafters(self) -> list[str]:
        """Drafters with a ``match_<d>`` or ``conf_<d>`` column, sorted."""
        return sorted({d for c in self.table.column_names if (d := drafter_of(c)) is not None})

    @property
    def max_response_len(self) -> int:
        return int(self.meta.max_response_len)

    # ---- numpy accessors ---------------------------------------------------------------------
    def column(self, name: str) -> np.ndarray:
        """A flat column as a numpy array (cached; do not modify it in place)."""
        key = "col:" + name
        if key not in self._cache:
            self._require(name)
            if name not in REQUIRED_COLUMNS:
                raise SpecrollError(f"'{name}' is a list column", field=name, fix="use Trace.ragged(name)")
            arr = self.table.column(name).to_numpy()
            arr.flags.writeable = False
            self._cache[key] = arr
        return self._cache[key]

    def ragged(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A list column as ``(values, offsets)``: row i is ``values[offsets[i]:offsets[i+1]]``;
        offsets are int64 of length ``len(trace) + 1`` starting at 0."""
        key = "rag:" + name
        if key not in self._cache:
            self._require(name)
            if name in REQUIRED_COLUMNS:
                raise SpecrollError(f"'{name}' is not a list column", field=name,
                                    fix="use Trace.column(name)")
            flat, offsets = _ragged(self.table.column(name))
            values = flat.to_numpy(zero_copy_only=False)
            values.flags.writeable = False
            offsets.flags.writeable = False
            self._cache[key] = (values, offsets)
        return self._cache[key]

    def has(self, name: str) -> bool:
        return name in self.table.column_names

    def _require(self, name: str) -> None:
        if name not in self.table.column_names:
            hint = "run `specroll trace match`" if name.startswith(tuple(DRAFTER_PREFIXES)) else \
                "record or import a trace that has it"
            raise SpecrollError(f"the trace has no column '{name}' (has {self.table.column_names})",
                                file=self.meta.source or None, field=name, fix=hint)

    @property
    def steps(self) -> np.ndarray:
        """Sorted unique RL steps."""
        if "steps" not in self._cache:
            self._cache["steps"] = np.unique(self.column("step"))
        return self._cache["steps"]

    # ---- derived traces ----------------------------------------------------------------------
    def select(self, step: int | Iterable[int] | None = None, prompt_id: Iterable[int] | None = None,
               rows: np.ndarray | None = None) -> Trace:
        """Rows of the given step(s) and/or prompt ids, or a boolean/integer row selection."""
        mask = np.ones(len(self), dtype=bool)
        if step is not None:
            wanted = np.atleast_1d(np.asarray(list(step) if not np.isscalar(step) else step))
            mask &= np.isin(self.column("step"), wanted)
        if prompt_id is not None:
            mask &= np.isin(self.column("prompt_id"), np.asarray(list(prompt_id)))
        if rows is not None:
            rows = np.asarray(rows)
            if rows.dtype == bool:
                mask &= rows
            else:
                sel = np.zeros(len(self), dtype=bool)
                sel[rows] = True
                mask &= sel
        table = self.table.filter(pa.array(mask))
        if table.num_rows == 0:
            raise SpecrollError("the selection matched no rollouts", file=self.meta.source or None,
                                field="step", fix=f"pick steps among {self.steps.tolist()[:20]}")
        return Trace(table, self.meta, validate=False)

    def sort(self) -> Trace:
        """Rows ordered by (step, prompt_id, sample)."""
        idx = pc.sort_indices(self.table, sort_keys=[("step", "ascending"), ("prompt_id", "ascending"),
                                                      ("sample", "ascending")])
        return Trace(self.table.take(idx), self.meta, validate=False)

    def with_ragged_column(self, name: str, values: np.ndarray, offsets: np.ndarray,
                           drafter_meta: Mapping[str, Any] | None = None) -> Trace:
        """A new trace with list column ``name`` added (or replaced); for ``match_<d>``/``conf_<d>``
        columns pass ``drafter_meta = {"kind", "params", "kmax"}`` unless the metadata has it."""
        arr = _as_list_array(name, values, offsets)
        meta = copy.deepcopy(self.meta)
        d = drafter_of(name)
        if drafter_meta is not None:
            if d is None:
                raise SpecrollError("drafter_meta given for a column that is not match_/conf_", field=name,
                                    fix="name the column match_<drafter> or conf_<drafter>")
            meta.extra.setdefault("drafters", {})[d] = dict(drafter_meta)
        table = self.table
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, arr)
        else:
            table = table.append_column(name, arr)
        return Trace(table, meta)

    def drop_columns(self, names: Iterable[str]) -> Trace:
        names = [n for n in names if n in self.table.column_names]
        bad = [n for n in names if n in REQUIRED_COLUMNS]
        if bad:
            raise SpecrollError(f"cannot drop required columns {bad}", field=bad[0], fix="keep them")
        return Trace(self.table.drop_columns(names), self.meta, validate=False)
