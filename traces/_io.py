"""Parquet I/O for traces: validated reading, atomic writing, and a streaming writer for huge traces.

Files are written with fixed writer options and sorted-key JSON metadata, so the same trace
always gives the same bytes (the determinism tests compare file hashes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from specroll.core.errors import SpecrollError
from specroll.core.fileio import atomic_path
from specroll.traces._schema import (
    META_KEY,
    REQUIRED_COLUMNS,
    TraceMeta,
    check_columns,
    check_unique_keys,
    validate_table,
)
from specroll.traces._trace import Trace

# Fixed writer options: part of the file format's determinism.
_WRITE_OPTS: dict[str, Any] = {"compression": "zstd", "compression_level": 3, "write_statistics": True,
                               "use_dictionary": False}
ROW_GROUP_SIZE = 262_144


def _with_meta(table: pa.Table, meta: TraceMeta) -> pa.Table:
    return table.replace_schema_metadata({META_KEY: meta.to_json()})


def write_trace(trace: Trace, path: str | Path) -> Path:
    """Write ``trace`` to Parquet at ``path`` atomically (temp file + rename); returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(_with_meta(trace.table, trace.meta), tmp, row_group_size=ROW_GROUP_SIZE, **_WRITE_OPTS)
    return path


def _open_parquet(path: Path) -> pq.ParquetFile:
    if not path.exists():
        raise SpecrollError("trace file not found", file=path, fix="check the path")
    if path.is_dir():
        raise SpecrollError("is a directory, not a trace file", file=path, fix="pass a .parquet file")
    if path.stat().st_size == 0:
        raise SpecrollError("the file is empty", file=path,
                            fix="regenerate it (`specroll trace synth` or `specroll trace import`)")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SpecrollError(f"not a Parquet file ({str(exc).splitlines()[0][:120]})", file=path,
                            fix="pass a trace written by specroll (Parquet)") from None


def read_meta(path: str | Path) -> TraceMeta:
    """Only the metadata of the trace at ``path`` (cheap: reads the footer)."""
    path = Path(path)
    pf = _open_parquet(path)
    raw = (pf.schema_arrow.metadata or {}).get(META_KEY)
    if raw is None:
        raise SpecrollError("the Parquet file has no specroll trace metadata", file=path, field="specroll",
                            fix="create traces with `specroll trace synth` / `specroll trace import`, or "
                            "traces.write_trace")
    return TraceMeta.from_json(raw, file=path)


def read_trace(path: str | Path, columns: Sequence[str] | None = None) -> Trace:
    """Read and fully validate a trace; ``columns`` limits the optional list columns read
    (the required columns are always read)."""
    path = Path(path)
    meta = read_meta(path)
    pf = _open_parquet(path)
    names = pf.schema_arrow.names
    check_columns(pf.schema_arrow, file=path)  # every column's name and type, even those not read
    if columns is not None:
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise SpecrollError(f"the trace has no column(s) {unknown}", file=path, field=unknown[0],
                                fix=f"choose among {names}")
        wanted = list(dict.fromkeys([*[c for c in names if c in REQUIRED_COLUMNS], *columns]))
    else:
        wanted = names
    try:
        table = pf.read(columns=wanted, use_threads=True)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SpecrollError(f"the Parquet data is corrupt ({str(exc).splitlines()[0][:120]})", file=path,
                            fix="regenerate the trace") from None
    return Trace(table.replace_schema_metadata(None), meta, file=path)


class TraceWriter:
    """Stream rollouts into a trace file batch by batch; the file appears (atomically) on close.

    >>> with TraceWriter("t.parquet", meta) as w:     # doctest: +SKIP
    ...     w.write_batch({"step": ..., "prompt_id": ..., ...})

    Every batch is validated as it arrives; duplicate keys are checked across all batches on
    close. If the block raises, nothing is left behind.
    """

    def __init__(self, path: str | Path, meta: TraceMeta) -> None:
        meta.check(file=path)
        self.path = Path(path)
        self.meta = meta
        self.rows = 0
        self._stack = contextlib.ExitStack()
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._keys: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._closed = False

    def __enter__(self) -> TraceWriter:
        return self

    def write_batch(self, batch: pa.Table | Trace | Mapping[str, Any]) -> None:
        """Append rollouts: an Arrow table, a Trace, or a mapping accepted by Trace.from_columns."""
        if self._closed:
            raise RuntimeError("TraceWriter is closed")
        if isinstance(batch, Trace):
            table = batch.table
        elif isinstance(batch, pa.Table):
            table = batch
        else:
            table = Trace.from_columns(self.meta, batch).table
        if table.num_rows == 0:
            return
        table = table.replace_schema_metadata(None)
        check_columns(table.schema, file=self.path)
        validate_table(table, self.meta, file=self.path, check_keys=False)
        if self._schema is None:
            self._schema = table.schema
            self._tmp = self._stack.enter_context(atomic_path(self.path))
            schema = self._schema.with_metadata({META_KEY: self.meta.to_json()})
            self._writer = pq.ParquetWriter(self._tmp, schema, **_WRITE_OPTS)
        elif table.schema != self._schema:
            raise SpecrollError(f"batch columns {table.schema.names} differ from the first batch's "
                                f"{self._schema.names}", file=self.path, field="columns",
                                fix="write the same columns, with the same types, in every batch")
        self._keys.append(tuple(table.column(c).to_numpy() for c in ("step", "prompt_id", "sample")))
        self._writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
        self.rows += table.num_rows

    def close(self) -> Path:
        """Finish the file and rename it into place."""
        if self._closed:
            return self.path
        try:
            if self._writer is None:
                raise SpecrollError("no rollouts were written", file=self.path, field="response_len",
                                    fix="write at least one batch with rows")
            keys = [np.concatenate(k) for k in zip(*self._keys)]
            self._keys = []
            check_unique_keys(*keys, file=self.path)
            self._writer.close()
        except BaseException as exc:
            self.abort(exc)
            raise
        self._closed = True
        self._stack.close()  # renames the temp file onto the target
        return self.path

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop everything written so far; the target path is left untouched."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        err = exc if exc is not None else RuntimeError("aborted")
        with contextlib.suppress(BaseException):
            self._stack.__exit__(type(err), err, err.__traceback__)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)
