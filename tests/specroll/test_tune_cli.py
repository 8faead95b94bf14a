"""`specroll tune` end to end on a tiny config (a trial is a few milliseconds of simulation)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from specroll.cli import main


def test_tune_writes_files_and_best_policy_replays_in_simulate(tmp_path, capsys, tune_cli):
    out = tmp_path / "out"
    assert tune_cli.tune(out) == 0
    text = capsys.readouterr().out
    assert "best" in text and "defaults" in text and "ar" in text and "best params:" in text
    for name in ("best_policy.json", "history.parquet", "tune_summary.json", "study.db"):
        assert (out / name).exists(), name
    summary = json.loads((out / "tune_summary.json").read_text())
    assert summary["n_complete"] == 6 == len(tune_cli.complete(out))
    assert [r["label"] for r in summary["runs"]] == ["tiny seed=2", "tiny seed=3"]
    # The objective is the mean of the runs' makespan_s, and the first trial is the defaults.
    best = [r["best"]["makespan_s"] for r in summary["runs"]]
    assert summary["best_value_s"] == pytest.approx(sum(best) / 2, rel=1e-12)
    assert tune_cli.complete(out)[0]["value"] == pytest.approx(summary["defaults_value_s"], rel=1e-12)
    assert summary["best_value_s"] <= summary["defaults_value_s"] < summary["ar_value_s"]
    # `specroll simulate --policy-file` on the same workload and seed reproduces the tuned run exactly.
    plain = tmp_path / "plain.toml"
    plain.write_text(tune_cli.SIM)
    assert main(["simulate", str(plain), "--policy-file", str(out / "best_policy.json"), "--seed", "2",
                 "--out", str(tmp_path / "sim")]) == 0
    sim = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert sim["policy"]["policy"] == "threshold"
    assert sim["makespan_s"] == summary["runs"][0]["best"]["makespan_s"]


def test_best_policy_runs_in_rollout(tmp_path, tune_cli):
    out = tmp_path / "out"
    assert tune_cli.tune(out, trials="3") == 0
    assert main(["rollout", "--model", "toy", "--policy-file", str(out / "best_policy.json"),
                 "--prompts", "2", "--samples", "2", "--steps", "2", "--max-new-tokens", "20",
                 "--max-batch", "3", "--out", str(tmp_path / "ro")]) == 0
    s = json.loads((tmp_path / "ro" / "summary.json").read_text())
    assert "threshold" in json.dumps(s["config"])


def test_rerun_resumes_and_seeded_runs_reproduce(tmp_path, tune_cli):
    a = tmp_path / "a"
    assert tune_cli.tune(a, trials="4", family="das") == 0
    first = tune_cli.complete(a)
    assert tune_cli.tune(a, trials="7", family="das") == 0  # resumes: 3 more, the 4 kept
    again = tune_cli.complete(a)
    assert len(again) == 7 and [(r["number"], r["value"]) for r in first] == [
        (r["number"], r["value"]) for r in again[:4]]
    assert json.loads((a / "tune_summary.json").read_text())["trials_run_now"] == 3
    # A fresh study with the same sampler seed replays the same trials and the same best.
    c, d = tmp_path / "c", tmp_path / "d"
    for out in (c, d):
        assert tune_cli.tune(out, "--seed", "5", trials="6", family="das") == 0
    assert [r["value"] for r in tune_cli.complete(c)] == [r["value"] for r in tune_cli.complete(d)]
    assert (c / "best_policy.json").read_bytes() == (d / "best_policy.json").read_bytes()


def test_pins_several_traces_and_journal_storage(tmp_path, tune_cli):
    out = tmp_path / "out"
    tune = 'seeds = [1, 2]\ntraces = ["tiny", { preset = "tiny", prompts = 4 }]\nsteps = 1'
    assert tune_cli.tune(out, "--param", "k_min=0", "--param", "h=0.5",
                 "--storage", f"journal:{tmp_path / 's.journal'}", tune=tune, trials="3") == 0
    summary = json.loads((out / "tune_summary.json").read_text())
    assert len(summary["runs"]) == 4 and summary["pinned"] == {"k_min": 0, "h": 0.5}
    best = json.loads((out / "best_policy.json").read_text())
    assert best["params"]["k_min"] == 0 and best["params"]["h"] == 0.5
    assert not any(k in ("param_k_min", "param_h") for k in tune_cli.complete(out)[0])
    assert (tmp_path / "s.journal").exists() and not (out / "study.db").exists()


def test_mdp_is_priced_by_the_simulated_profile_and_keeps_no_profile_name(tmp_path, tune_cli):
    out = tmp_path / "out"
    assert tune_cli.tune(out, family="mdp", trials="2") == 0
    best = json.loads((out / "best_policy.json").read_text())
    # The table spans the simulated batch sizes; the cost is whatever profile runs the policy.
    assert "profile" not in best["params"] and best["params"]["max_batch"] == 16


@pytest.mark.parametrize("argv, tune, needle", [
    (["--family", "nope"], "", "unknown policy 'nope'"),
    (["--family", "ar"], "", "no tunable parameters"),
    (["--family", "threshold", "--param", "zzz=1"], "", "no parameter 'zzz'"),
    (["--family", "threshold"], "wat = 1", "tune.wat"),
    (["--family", "threshold"], "seeds = []", "tune.seeds"),
    (["--family", "threshold"], "traces = [3]", "tune.traces[0]"),
    ([], "", "no policy family"),
])
def test_bad_input_is_one_clear_error(tmp_path, capsys, argv, tune, needle, tune_cli):
    rc = main(["tune", str(tune_cli.config(tune)), *argv, "--trials", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err
    assert not (tmp_path / "o" / "best_policy.json").exists()


def test_tune_table_defaults_family_and_trials(tmp_path, tune_cli):
    cfg = tune_cli.config('seeds = [2]\nfamily = "adaptive"\ntrials = 3')
    assert main(["tune", str(cfg), "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "best_policy.json").read_text())["policy"] == "adaptive"
    assert len(tune_cli.complete(tmp_path / "o")) == 3


def _db_complete(db):
    import optuna

    study = optuna.load_study(study_name="specroll-das", storage=f"sqlite:///{db}")
    return {(t.number, t.value) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}


def test_sigkill_mid_study_then_rerun_loses_no_finished_trial(tmp_path, tune_cli):
    cfg = tune_cli.config()
    out = tmp_path / "out"
    env = {**os.environ, "SPECROLL_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "specroll", "tune", str(cfg), "--family", "das", "--out", str(out)]
    log = tmp_path / "killed.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([*cmd, "--trials", "100000"], env=env, stdout=fh, stderr=fh)
    db = out / "study.db"
    before: set = set()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:  # wait for a few finished trials
            time.sleep(0.3)
            if db.exists():
                try:
                    before = _db_complete(db)
                except Exception:  # the database is being created
                    continue
                if len(before) >= 3:
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and len(before) >= 3, (
        f"returncode {proc.returncode}, {len(before)} finished trials seen; log: {log.read_text()[-2000:]}")
    killed = _db_complete(db)
    assert before <= killed and not (out / "best_policy.json").exists()
    # Re-running asks for two more than were finished: it runs only those, keeping every one.
    rc = subprocess.run([*cmd, "--trials", str(len(killed) + 2)], env=env, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    final = _db_complete(db)
    assert killed <= final and len(final) == len(killed) + 2
    assert json.loads((out / "tune_summary.json").read_text())["trials_run_now"] == 2


def test_a_tuning_config_simulates_as_is(tmp_path, capsys, tune_cli):
    cfg = tune_cli.config()  # has a [tune] table: simulate ignores it
    assert main(["simulate", str(cfg), "--out", str(tmp_path / "sim")]) == 0
    assert (tmp_path / "sim" / "summary.json").exists()
