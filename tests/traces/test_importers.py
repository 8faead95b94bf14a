"""ServeGen and JSONL importers on small fixtures."""

import json
from pathlib import Path

import numpy as np
import pytest

from specroll.core.errors import SpecrollError
from specroll.traces import (
    JsonlFields,
    import_jsonl,
    load_servegen_pmf,
    read_trace,
    servegen_preset,
    synthesize,
    write_trace,
)

MINI = Path(__file__).parent / "data" / "servegen-mini"
RAW = Path(__file__).resolve().parents[3] / "shared" / "data" / "servegen-deepseek-r1"


def test_servegen_pooling_weights_windows_by_request_count():
    pmf = load_servegen_pmf(MINI)
    assert pmf.values.tolist() == [100, 200, 1000, 32768]
    assert np.allclose(pmf.probs, [0.125, 0.125, 0.5, 0.25])
    inp = load_servegen_pmf(MINI, "input_tokens")
    assert inp.values.tolist() == [10, 20, 30]
    assert np.allclose(inp.probs, [0.375, 0.125, 0.5])


def test_servegen_trace_marginal_matches_distribution():
    preset = servegen_preset(MINI)
    trace = synthesize(preset, prompts=400, samples=16, steps=2, seed=2)
    rlen = trace.column("response_len")
    values, counts = np.unique(rlen, return_counts=True)
    assert set(values.tolist()) <= {100, 200, 1000, 32768}
    freq = dict(zip(values.tolist(), (counts / counts.sum()).tolist()))
    for v, p in [(100, 0.125), (200, 0.125), (1000, 0.5), (32768, 0.25)]:
        assert abs(freq.get(v, 0.0) - p) < 0.04
    # the cap mass of the data becomes unfinished rollouts; groups stay correlated
    assert np.array_equal(~trace.column("finished"), rlen == 32768)
    assert preset.samples == 16


def test_servegen_missing_data_is_clear_error(tmp_path):
    with pytest.raises(SpecrollError, match="ServeGen data not found") as exc:
        load_servegen_pmf(tmp_path)
    assert "SPECROLL_SERVEGEN_DIR" in exc.value.message


def test_servegen_bad_dict_string(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "chunk-0-dataset.json").write_text(json.dumps({"0": {"output_tokens": "__import__('os')"}}))
    (raw / "chunk-0-trace.csv").write_text("0,1.0,1,Gamma,1,1\n")
    with pytest.raises(SpecrollError, match="not a dict literal"):
        load_servegen_pmf(tmp_path)


NO_RAW = "ServeGen's raw data (../shared/data/servegen-deepseek-r1) is not beside this checkout"


@pytest.mark.skipif(not RAW.is_dir(), reason=NO_RAW)
def test_servegen_pooling_matches_the_datasets_own_pooled_csv():
    from specroll.traces import read_pooled_csv

    mine = load_servegen_pmf()  # the packed distribution, itself a pooling of the raw data
    theirs = read_pooled_csv(RAW / "pooled_output_tokens_pmf.csv")
    assert np.array_equal(mine.values, theirs.values)
    assert np.allclose(mine.probs, theirs.probs, rtol=1e-6, atol=1e-12)


def _write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def _records():
    recs = []
    for step in range(2):
        for p, text in enumerate(["what is 2+2?", "integrate x^2"]):
            for k in range(3):
                recs.append({"step": step, "uid": f"u{step}-{p}", "prompt": text,
                             "response_length": 10 * (p + 1) + k, "prompt_tokens": 5 + p})
    return recs


def test_jsonl_import_maps_fields_and_groups(tmp_path):
    path = _write_jsonl(tmp_path / "dump.jsonl", _records())
    fields = JsonlFields(prompt_len="prompt_tokens")
    trace = import_jsonl(path, cap=22, fields=fields)
    assert len(trace) == 12 and trace.steps.tolist() == [0, 1]
    pid = trace.column("prompt_id")
    # the same prompt text has the same id in both steps (uids differ per step)
    assert len(np.unique(pid)) == 2
    assert sorted(trace.column("sample").tolist()) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    # finished defaults to length < cap: the two rollouts of length 22 hit the cap
    assert (~trace.column("finished")).sum() == 2
    assert set(trace.column("response_len")[~trace.column("finished")].tolist()) == {22}
    assert set(trace.column("prompt_len").tolist()) == {5, 6}
    assert trace.meta.source == "import:jsonl dump.jsonl"


def test_jsonl_errors_name_line_and_field(tmp_path):
    recs = _records()
    path = _write_jsonl(tmp_path / "d.jsonl", recs)
    with pytest.raises(SpecrollError, match=r"d.jsonl:\d+.*outside 1..cap=15"):
        import_jsonl(path, cap=15, fields=JsonlFields(prompt_len="prompt_tokens"))
    with pytest.raises(SpecrollError, match="prompt-length"):
        import_jsonl(path, cap=100)
    del recs[3]["step"]
    path = _write_jsonl(tmp_path / "d2.jsonl", recs)
    with pytest.raises(SpecrollError, match=r"d2.jsonl:4: field 'step'"):
        import_jsonl(path, cap=100, default_prompt_len=3)
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(SpecrollError, match="not valid JSON"):
        import_jsonl(tmp_path / "bad.jsonl", cap=100)


def test_jsonl_round_trip_file(tmp_path):
    path = _write_jsonl(tmp_path / "dump.jsonl", _records())
    trace = import_jsonl(path, cap=100, fields=JsonlFields(prompt_len="prompt_tokens"))
    back = read_trace(write_trace(trace, tmp_path / "t.parquet"))
    assert back.table.equals(trace.table)
    assert back.column("finished").all()


def test_the_packed_servegen_distributions_ship_and_are_normalised():
    for field in ("output_tokens", "input_tokens"):
        pmf = load_servegen_pmf(field=field)  # no data dir: the files inside the package
        assert pmf.values.size > 1000 and np.all(np.diff(pmf.values) > 0)
        assert abs(pmf.probs.sum() - 1.0) < 1e-9 and (pmf.probs > 0).all()


@pytest.mark.skipif(not RAW.is_dir(), reason=NO_RAW)
def test_the_packed_servegen_distributions_equal_a_pooling_of_the_raw_data():
    for field in ("output_tokens", "input_tokens"):
        packed, raw = load_servegen_pmf(field=field), load_servegen_pmf(RAW, field)
        assert np.array_equal(packed.values, raw.values) and np.array_equal(packed.probs, raw.probs)
