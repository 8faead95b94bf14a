"""The main job (analysis/_mainjob.py): config merging and errors, the TOML it hands to its stages,
and a small end-to-end run of its simulated stages (validation is covered by test_validate)."""

from __future__ import annotations

import json

import pytest

from specroll.analysis._mainjob import DEFAULTS, format_main, load_main_config, run_main, write_toml
from specroll.core.errors import SpecrollError
from specroll.core.fileio import read_toml


def test_defaults_without_a_file_and_merge_one_level(tmp_path):
    assert load_main_config(None) == DEFAULTS
    f = tmp_path / "m.toml"
    f.write_text('[trace]\nprompts = 3\n[tune]\ntrials = 2\n')
    cfg = load_main_config(f)
    assert cfg["trace"]["prompts"] == 3 and cfg["trace"]["preset"] == DEFAULTS["trace"]["preset"]
    assert cfg["tune"]["trials"] == 2 and cfg["tune"]["family"] == DEFAULTS["tune"]["family"]
    assert DEFAULTS["trace"]["prompts"] != 3  # the defaults are not mutated


def test_unknown_table_is_one_clear_error(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text("[simulat]\nx = 1\n")
    with pytest.raises(SpecrollError) as exc:
        load_main_config(f)
    assert exc.value.field == "simulat" and "trace" in (exc.value.fix or "")


def test_write_toml_round_trips_the_stage_configs(tmp_path):
    d = {"seed": 1, "name": 'a "quoted" \\ path', "flag": True, "xs": [1, 2.5],
         "cluster": {"engines": 8, "dispatch": "round-robin"}, "policy": {"params": {"k": 4}}}
    assert read_toml(write_toml(d, tmp_path / "c.toml")) == d


def test_small_main_job_writes_summary_table_and_logs(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('skip = ["validate", "report"]\n'
                   'policies = [{ name = "ar" }, { name = "fixed", params = { k = 4 } },\n'
                   '            { name = "oracle" }]\n'
                   '[trace]\npreset = "math-16k"\nprompts = 6\nsamples = 2\nsteps = 2\nseed = 3\n'
                   '[tune]\nfamily = "das"\ntrials = 2\nseeds = [2]\nsteps = 1\n')
    out = tmp_path / "out"
    s = run_main(out, cfg)
    assert set(s["simulated"]) == {"ar", "fixed-k4", "oracle", "tuned-das"}
    assert s["tuned"] == "tuned-das" and "validation" not in s
    ar = s["simulated"]["ar"]
    assert ar["speedup"] == pytest.approx(1.0) and ar["steps"] == 2
    # the oracle is the floor every policy is compared with
    assert all(r["vs_oracle"] >= -1e-9 for r in s["simulated"].values())
    assert json.loads((out / "main_summary.json").read_text())["simulated"].keys() == s["simulated"].keys()
    for log in ("trace", "trace-stats", "simulate-ar", "tune", "simulate-tuned-das"):
        assert (out / "logs" / f"{log}.txt").read_text().startswith("$ specroll ")
    table = format_main(s, " on test")
    assert "tuned-das" in table and "<- tuned" in table and "Real model" not in table


def test_stage_logs_keep_status_lines_and_drop_progress_bars():
    from specroll.analysis._mainjob import _log_text

    screen = ("tune das: 2 simulation(s) per trial\n"
              "simulate das: 2step [00:00]\x1b[A\n"            # a nested bar's line
              "\rtune das:   0%|   | 0/3\rtune das: 100%|###| 3/3\r             \r\n"  # erased bar
              "\rtune das:  33%|#  | 1/3\r              \rbest params: k=4\n"  # a line after a bar
              "\rtune das:  67%|## | 2/3 [00:01<00:00,  2.3trial/s]\n"  # a bar cut by a nested one
              "done\n")
    assert _log_text(screen) == "tune das: 2 simulation(s) per trial\nbest params: k=4\ndone\n"


def test_stage_output_is_echoed_and_bars_follow_the_terminal():
    import io

    from specroll.analysis._mainjob import _Tee

    class Term(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Term()
    tee = _Tee(term)
    tee.write("validate: loading\n")
    assert tee.getvalue() == term.getvalue() == "validate: loading\n"
    assert tee.isatty() and not _Tee(io.StringIO()).isatty()
