"""The main job (analysis/_mainjob.py): config merging and errors, and a small end-to-end run of its
simulated stages through the library (validation is covered by test_validate)."""

from __future__ import annotations

import json

import pytest

from specroll.analysis import MAIN_DEFAULTS, MainSummary, format_main, load_main_config, run_main
from specroll.core.errors import SpecrollError
from specroll.core.results import read_summary


def test_defaults_without_a_file_and_merge_one_level(tmp_path):
    base = load_main_config(None)
    assert base.trace.prompts == MAIN_DEFAULTS["trace"]["prompts"]
    f = tmp_path / "m.toml"
    f.write_text('[trace]\nprompts = 3\n[tune]\ntrials = 2\n')
    cfg = load_main_config(f)
    assert cfg.trace.prompts == 3 and cfg.trace.preset == MAIN_DEFAULTS["trace"]["preset"]
    assert cfg.tune.trials == 2 and cfg.tune.family == MAIN_DEFAULTS["tune"]["family"]
    assert MAIN_DEFAULTS["trace"]["prompts"] != 3  # the defaults are not mutated


@pytest.mark.parametrize("text, field", [
    ("[simulat]\nx = 1\n", "simulat"),
    ('[trace]\nprompts = "many"\n', "trace.prompts"),
    ("[tune]\ntrials = 0\n", "tune.trials"),
    ('skip = ["everything"]\n', "skip[0]"),
])
def test_bad_main_configs_are_one_clear_error(tmp_path, text, field):
    f = tmp_path / "m.toml"
    f.write_text(text)
    with pytest.raises(SpecrollError) as exc:
        load_main_config(f)
    assert exc.value.field == field and exc.value.file == str(f) and exc.value.fix


def test_small_main_job_writes_summary_table_and_logs(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('skip = ["validate", "report"]\n'
                   'policies = [{ name = "ar" }, { name = "fixed", params = { k = 4 } },\n'
                   '            { name = "oracle" }, { name = "mdp" }]\n'
                   '[trace]\npreset = "math-16k"\nprompts = 6\nsamples = 2\nsteps = 2\nseed = 3\n'
                   '[tune]\nfamily = "das"\ntrials = 2\nseeds = [2]\nsteps = 1\n')
    out = tmp_path / "out"
    s = run_main(out, cfg)
    assert set(s.simulated) == {"ar", "fixed-k4", "oracle", "mdp", "tuned-das"}
    assert s.tuned == "tuned-das" and s.validation is None
    ar = s.simulated["ar"]
    assert ar["speedup"] == pytest.approx(1.0) and ar["steps"] == 2
    # the no-waste oracle drafts exactly what is accepted: here no policy beats it
    assert all(r["vs_oracle"] >= -1e-9 for r in s.simulated.values())
    back = read_summary(out / "main_summary.json")
    assert isinstance(back, MainSummary) and back.simulated.keys() == s.simulated.keys()
    assert json.loads((out / "main_summary.json").read_text())["kind"] == "main"
    for log in ("trace", "simulate-ar", "tune", "simulate-tuned-das"):
        assert (out / "logs" / f"{log}.txt").read_text().strip()
    # each simulated row is also a simulate output folder the report can read
    assert read_summary(out / "sim" / "fixed-k4" / "summary.json").kind == "simulate"
    table = format_main(s)
    assert "tuned-das" in table and "<- tuned" in table and "Real model" not in table
    assert s.cluster in table


def test_the_simulated_rows_equal_a_simulate_run_of_the_same_config(tmp_path):
    """The main job calls the library: its figures are a plain Simulator's, bit for bit."""
    from specroll.policies import make_policy
    from specroll.simulator import SimConfig, Simulator

    cfg = tmp_path / "m.toml"
    cfg.write_text('skip = ["validate", "report", "tune"]\n'
                   'policies = [{ name = "fixed", params = { k = 3 } }]\n'
                   '[trace]\nprompts = 4\nsamples = 2\nsteps = 1\nseed = 2\n')
    s = run_main(tmp_path / "out", cfg)
    trace = str((tmp_path / "out" / "trace.parquet").resolve())
    d = dict(MAIN_DEFAULTS["cluster"], workload={"trace": trace})
    alone = Simulator(SimConfig.from_dict(d)).run(make_policy("fixed", k=3), show_progress=False)
    assert s.simulated["fixed-k3"]["makespan_s"] == alone.summary.makespan_s
