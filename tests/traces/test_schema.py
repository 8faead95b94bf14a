"""Schema round trip, accessors, and every bad-input case of the reader (one clear error each)."""

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from specroll.core.errors import SpecrollError
from specroll.traces import Trace, TraceMeta, TraceWriter, read_trace, write_trace
from specroll.traces._schema import META_KEY

from .conftest import make_small_trace


def test_round_trip_preserves_rows_types_and_meta(tmp_path, small_trace):
    path = write_trace(small_trace, tmp_path / "t.parquet")
    back = read_trace(path)
    assert back.table.equals(small_trace.table)
    assert back.meta == small_trace.meta
    assert back.table.schema.field("step").type == pa.int32()
    assert back.table.schema.field("token_ids").type.value_type == pa.int32()
    assert len(back) == 24 and back.steps.tolist() == [0, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_same_trace_same_bytes(tmp_path):
    a = write_trace(make_small_trace(seed=3), tmp_path / "a.parquet")
    b = write_trace(make_small_trace(seed=3), tmp_path / "b.parquet")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def test_read_selected_columns(tmp_path, small_trace):
    path = write_trace(small_trace, tmp_path / "t.parquet")
    back = read_trace(path, columns=["token_ids"])
    assert back.columns == ["step", "prompt_id", "sample", "prompt_len", "response_len", "finished",
                            "token_ids"]


def test_ragged_and_select(small_trace):
    values, offsets = small_trace.ragged("token_ids")
    rlen = small_trace.column("response_len")
    assert offsets.dtype == np.int64 and len(offsets) == len(small_trace) + 1
    assert np.array_equal(np.diff(offsets), rlen)
    sub = small_trace.select(step=1)
    assert set(sub.column("step").tolist()) == {1} and len(sub) == 12
    v2, o2 = sub.ragged("token_ids")  # offsets re-based on a sliced table
    assert o2[0] == 0 and np.array_equal(v2, values[offsets[12]:])
    assert len(small_trace.select(step=[0, 1])) == 24
    with pytest.raises(SpecrollError, match="matched no rollouts"):
        small_trace.select(step=7)


def test_with_ragged_column_adds_drafter(small_trace, tmp_path):
    rlen = small_trace.column("response_len").astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(rlen)])
    m = np.zeros(offsets[-1], dtype=np.int16)
    conf = np.zeros(offsets[-1] * 4, dtype=np.float32)
    t = small_trace.with_ragged_column("match_suffix", m, offsets,
                                       {"kind": "suffix", "params": {"window": 2}, "kmax": 4})
    t = t.with_ragged_column("conf_suffix", conf, offsets * 4)
    assert t.drafters == ["suffix"] and small_trace.drafters == []
    back = read_trace(write_trace(t, tmp_path / "m.parquet"))
    assert back.meta.extra["drafters"]["suffix"]["kmax"] == 4
    assert back.ragged("match_suffix")[0].dtype == np.int16
    assert back.ragged("conf_suffix")[0].dtype == np.float32


def test_streaming_writer_matches_write_trace(tmp_path, small_trace):
    with TraceWriter(tmp_path / "s.parquet", small_trace.meta) as w:
        w.write_batch(small_trace.select(step=0))
        w.write_batch(small_trace.select(step=1).table)
    back = read_trace(tmp_path / "s.parquet")
    assert back.table.equals(small_trace.table)


def test_streaming_writer_leaves_nothing_on_error(tmp_path, small_trace):
    with pytest.raises(RuntimeError), TraceWriter(tmp_path / "s.parquet", small_trace.meta) as w:
        w.write_batch(small_trace.select(step=0))
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_streaming_writer_rejects_duplicates_across_batches(tmp_path, small_trace):
    with pytest.raises(SpecrollError, match="duplicate"), TraceWriter(tmp_path / "s.parquet",
                                                                      small_trace.meta) as w:
        w.write_batch(small_trace.select(step=0))
        w.write_batch(small_trace.select(step=0))
    assert list(tmp_path.iterdir()) == []


# ---- bad inputs: each gives one SpecrollError naming file, column and fix -----------------------

def _write_raw(path, table, meta: dict | None):
    if meta is not None:
        table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    pq.write_table(table, path)
    return path


def _good_meta(cap=50):
    return {"schema_version": 1, "source": "t", "model": "", "max_response_len": cap, "temperature": 1.0,
            "extra": {}}


def _base_table(n=4):
    return pa.table({
        "step": pa.array([0] * n, pa.int32()), "prompt_id": pa.array(range(n), pa.int64()),
        "sample": pa.array([0] * n, pa.int32()), "prompt_len": pa.array([5] * n, pa.int32()),
        "response_len": pa.array([10, 20, 30, 50], pa.int32()),
        "finished": pa.array([True, True, True, False]),
    })


def _replace(table, name, arr):
    return table.set_column(table.column_names.index(name), name, arr)


def bad_cases():
    t = _base_table()
    m = _good_meta()
    tok = pa.array([[1] * 10, [1] * 20, [1] * 30, [1] * 49], pa.list_(pa.int32()))
    match = pa.array([[0] * 10, [0] * 20, [0] * 30, [0] * 50], pa.list_(pa.int16()))
    return {
        "missing_column": (t.drop_columns(["finished"]), m, "finished", "missing required"),
        "extra_column": (t.append_column("foo", pa.array([1, 2, 3, 4])), m, "foo", "unexpected column"),
        "wrong_type": (_replace(t, "response_len", pa.array([10.0, 20.0, 30.0, 50.0])), m, "response_len",
                       "expected int32"),
        "nan": (t.append_column("conf_x", pa.array([[float("nan")] * 10, [0.0] * 20, [0.0] * 30, [0.0] * 50],
                                                    pa.list_(pa.float32()))),
                {**m, "extra": {"drafters": {"x": {"kind": "x", "params": {}, "kmax": 1}}}}, "conf_x", "NaN"),
        "null": (_replace(t, "prompt_len", pa.array([5, None, 5, 5], pa.int32())), m, "prompt_len",
                 "missing"),
        "zero_length": (_replace(t, "response_len", pa.array([0, 20, 30, 50], pa.int32())), m, "response_len",
                        "zero or negative"),
        "negative_prompt": (_replace(t, "prompt_len", pa.array([5, -1, 5, 5], pa.int32())), m, "prompt_len",
                            "zero or negative"),
        "above_cap": (t, _good_meta(cap=40), "response_len", "above the cap"),
        "duplicate": (_replace(t, "prompt_id", pa.array([0, 1, 1, 3], pa.int64())), m, "sample", "duplicate"),
        "unknown_version": (t, {**m, "schema_version": 99}, "schema_version", "unknown trace schema version"),
        "no_meta": (t, None, "specroll", "no specroll trace metadata"),
        "empty_table": (t.slice(0, 0), m, "response_len", "no rows"),
        "token_len_mismatch": (t.append_column("token_ids", tok), m, "token_ids",
                               "disagree with response_len"),
        "drafter_not_in_meta": (t.append_column("match_x", match), m, "match_x", "not described"),
        "match_above_kmax": (t.append_column("match_x", pa.array([[5] * 10, [0] * 20, [0] * 30, [0] * 50],
                                                                 pa.list_(pa.int16()))),
                             {**m, "extra": {"drafters": {"x": {"kind": "x", "params": {}, "kmax": 4}}}},
                             "match_x", "kmax"),
    }


@pytest.mark.parametrize("case", sorted(bad_cases()))
def test_bad_trace_raises_clear_error(tmp_path, case):
    table, meta, column, what = bad_cases()[case]
    path = _write_raw(tmp_path / "bad.parquet", table, meta)
    with pytest.raises(SpecrollError) as exc:
        read_trace(path)
    msg = exc.value.message
    assert str(path) in msg and f"field '{column}'" in msg and what in msg and "Fix:" in msg


def test_empty_file(tmp_path):
    path = tmp_path / "e.parquet"
    path.write_bytes(b"")
    with pytest.raises(SpecrollError, match="empty"):
        read_trace(path)


def test_not_parquet(tmp_path):
    path = tmp_path / "n.parquet"
    path.write_text("step,prompt_id\n0,1\n")
    with pytest.raises(SpecrollError, match="not a Parquet file"):
        read_trace(path)


def test_missing_file(tmp_path):
    with pytest.raises(SpecrollError, match="not found"):
        read_trace(tmp_path / "nope.parquet")


def test_from_columns_rejects_fractional_lengths():
    with pytest.raises(SpecrollError, match="non-integer"):
        Trace.from_columns(TraceMeta(max_response_len=10), dict(
            step=[0], prompt_id=[0], sample=[0], prompt_len=[1], response_len=np.array([1.5]),
            finished=[True]))
