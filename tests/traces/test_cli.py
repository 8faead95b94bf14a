"""`specroll trace ...` end to end: outputs, clear errors (exit 2, no traceback), nothing half-written."""

import hashlib
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from specroll.cli import main
from specroll.traces import read_trace

from .test_schema import _write_raw, bad_cases


def test_synth_stats_plot(tmp_path, capsys):
    out = tmp_path / "t.parquet"
    assert main(["trace", "synth", "--preset", "tiny", "--prompts", "20", "--samples", "4", "--steps", "3",
                 "--seed", "5", "--out", str(out)]) == 0
    assert len(read_trace(out)) == 240
    assert main(["trace", "stats", str(out), "--json", str(tmp_path / "s.json")]) == 0
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["count"] == 240 and stats["cap"] == 512
    assert "p99 / p50" in capsys.readouterr().out
    assert main(["trace", "plot", str(out), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "lengths_hist.png").exists()
    assert main(["trace", "info", str(out)]) == 0


def test_synth_cli_bit_identical(tmp_path):
    digests = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.parquet"
        main(["trace", "synth", "--preset", "code-8k", "--prompts", "50", "--steps", "2", "--seed", "3",
              "--out", str(path)])
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


@pytest.mark.parametrize("case", sorted(bad_cases()))
def test_cli_bad_trace_exit_2_clear_message(tmp_path, capsys, case):
    table, meta, column, _ = bad_cases()[case]
    path = _write_raw(tmp_path / "bad.parquet", table, meta)
    assert main(["trace", "stats", str(path), "--json", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("specroll: error: ") and f"field '{column}'" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]  # nothing written


@pytest.mark.parametrize("content", [b"", b"PAR1 this is not parquet"])
def test_cli_empty_or_not_parquet(tmp_path, capsys, content):
    path = tmp_path / "x.parquet"
    path.write_bytes(content)
    assert main(["trace", "plot", str(path), "--out", str(tmp_path / "plots")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "plots").exists()


def test_cli_subprocess_no_traceback(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"step": [1]}), path)
    proc = subprocess.run([sys.executable, "-m", "specroll", "trace", "stats", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "no specroll trace metadata" in proc.stderr


def test_cli_synth_bad_args_leave_nothing(tmp_path, capsys):
    out = tmp_path / "t.parquet"
    assert main(["trace", "synth", "--preset", "nope", "--out", str(out)]) == 2
    assert main(["trace", "synth", "--preset", "tiny", "--prompts", "0", "--out", str(out)]) == 2
    assert list(tmp_path.iterdir()) == []
    assert "unknown trace preset 'nope'" in capsys.readouterr().err


def test_cli_match_needs_token_ids(tmp_path, capsys):
    out = tmp_path / "t.parquet"
    main(["trace", "synth", "--preset", "tiny", "--out", str(out)])
    m = tmp_path / "m.parquet"
    assert main(["trace", "match", str(out), "--drafter", "suffix", "--out", str(m)]) == 2
    err = capsys.readouterr().err
    assert "compute_match_lengths" in err or "token_ids" in err
    assert not (tmp_path / "m.parquet").exists()


def test_cli_import_jsonl(tmp_path, capsys):
    src = tmp_path / "d.jsonl"
    src.write_text("\n".join(json.dumps({"step": 0, "uid": "a", "prompt": "p", "response_length": n})
                             for n in (3, 9, 12)) + "\n")
    out = tmp_path / "t.parquet"
    assert main(["trace", "import", "jsonl", str(src), "--out", str(out), "--cap", "12",
                 "--default-prompt-len", "4"]) == 0
    t = read_trace(out)
    assert t.column("response_len").tolist() == [3, 9, 12]
    assert t.column("finished").tolist() == [True, True, False]


def test_cli_match_plumbing_calls_compute_match_lengths(tmp_path, monkeypatch, capsys):
    # The drafters live in policies/ (another package); check only that the command passes the
    # trace, drafter name and parameters through and writes what it returns.
    import numpy as np

    from specroll import policies
    from specroll.traces import write_trace

    from .conftest import make_small_trace

    calls = {}

    def fake(trace, drafter, **params):
        calls.update(drafter=drafter, params=params, rows=len(trace))
        rlen = trace.column("response_len").astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(rlen)])
        return trace.with_ragged_column(f"match_{drafter}", np.zeros(offsets[-1], np.int16), offsets,
                                        {"kind": drafter, "params": params, "kmax": 4})

    monkeypatch.setattr(policies, "compute_match_lengths", fake, raising=False)
    src = write_trace(make_small_trace(), tmp_path / "t.parquet")
    out = tmp_path / "m.parquet"
    assert main(["trace", "match", str(src), "--drafter", "suffix", "--window", "2", "--param", "kmax=4",
                 "--param", "mode=tree", "--out", str(out)]) == 0
    assert calls == {"drafter": "suffix", "params": {"kmax": 4, "mode": "tree", "window": 2}, "rows": 24}
    assert read_trace(out).drafters == ["suffix"]
