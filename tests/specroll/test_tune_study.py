"""A study a team can trust: it knows what it measures, searches only what the simulation can
express, exports nothing else, and stops cleanly (issue 18)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import specroll.simulator  # noqa: F401 - registers the 'tune' summary kind before the registries' snapshot
from specroll.cli import main
from specroll.core.results import read_summary


def _study_trials(url, name):
    import optuna

    return optuna.load_study(study_name=name, storage=url).trials


def _snapshot(out):
    """What a refused run must leave as it was: every file of the output folder, byte for byte."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_resuming_with_another_config_is_one_clear_error(tmp_path, capsys, tune_cli):
    out = tmp_path / "out"
    assert tune_cli.tune(out, family="das", trials="3") == 0
    before = _snapshot(out)
    capsys.readouterr()
    # Other seeds: the study measured something else, and says what.
    assert tune_cli.tune(out, tune="seeds = [2, 4]", family="das", trials="5") == 2
    err = capsys.readouterr().err
    assert "measures something else" in err and "seeds: [2, 3] -> [2, 4]" in err
    assert "--study" in err and "--out" in err and "Traceback" not in err
    # Another simulated cluster (a field of the resolved config, not a [tune] field) too.
    other = tune_cli.SIM.replace("engines = 2", "engines = 3")
    tune_cli.config(sim=other, name="other.toml")
    rc = main(["tune", str(tmp_path / "other.toml"), "--family", "das", "--trials", "5", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "resolved.cluster.engines: 2 -> 3" in err
    assert _snapshot(out) == before  # nothing lost, nothing half-written
    assert len(_study_trials(f"sqlite:///{out / 'study.db'}", "specroll-das")) == 3


def test_changing_a_pin_is_the_identity_error_not_a_keyerror(tmp_path, capsys, tune_cli):
    out = tmp_path / "out"
    assert tune_cli.tune(out, "--param", "k_min=0", trials="3") == 0
    capsys.readouterr()
    assert tune_cli.tune(out, trials="4") == 2  # the pin dropped
    err = capsys.readouterr().err
    assert "pins.k_min: 0 -> (none)" in err and "Traceback" not in err
    assert tune_cli.tune(out, "--param", "k_min=1", trials="4") == 2  # the pin changed
    assert "pins.k_min: 0 -> 1" in capsys.readouterr().err
    assert tune_cli.tune(out, "--param", "k_min=0", trials="4") == 0  # the same pin resumes


def test_identity_is_recorded_in_the_study_and_in_best_policy(tmp_path, tune_cli):
    out = tmp_path / "out"
    assert tune_cli.tune(out, family="das", trials="2") == 0
    best = json.loads((out / "best_policy.json").read_text())
    import optuna

    study = optuna.load_study(study_name="specroll-das", storage=f"sqlite:///{out / 'study.db'}")
    ident = study.user_attrs["identity"]
    assert best["tuning"] == ident and study.user_attrs["family"] == "das"
    assert ident["seeds"] == [2, 3] and ident["steps"] == [2] and ident["kmax"] == 6
    assert ident["config_file"] == "tune.toml" and ident["profile"]["name"] == "h100-sxm:qwen2.5-7b"
    assert len(ident["hash"]) == 64 and ident["objective"].startswith("mean over runs of makespan_s")
    summary = read_summary(out / "tune_summary.json")
    assert summary.kind == "tune" and summary.identity == ident and summary.n_complete == 2


def test_search_space_is_clipped_to_the_simulated_kmax(tmp_path, capsys, tune_cli):
    out = tmp_path / "out"
    assert tune_cli.tune(out, trials="8") == 0  # threshold: k_max declared 2..32, the drafter's kmax 6
    text = capsys.readouterr().out
    assert "search space clipped to the simulated kmax 6: k_max 2..32 -> 2..6" in text
    summary = json.loads((out / "tune_summary.json").read_text())
    assert summary["kmax"] == 6 and summary["clipped"]["k_max"] == {"declared": [2, 32], "searched": [2, 6]}
    assert summary["defaults_policy"]["params"]["k_max"] == 6  # the defaults' 16 as the engine ran it
    ks = [r["param_k_max"] for r in tune_cli.complete(out)]
    assert max(ks) <= 6
    vllm = tmp_path / "vllm.json"
    assert main(["export-vllm", str(out / "best_policy.json"), "--out", str(vllm)]) == 0
    assert json.loads(vllm.read_text())["speculative_config"]["num_speculative_tokens"] <= 6


def test_export_refuses_a_parameter_outside_what_was_tuned(tmp_path, capsys, tune_cli):
    out = tmp_path / "out"
    assert tune_cli.tune(out, trials="2") == 0
    spec = json.loads((out / "best_policy.json").read_text())
    spec["params"]["k_max"] = 31
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(spec))
    capsys.readouterr()
    assert main(["export-vllm", str(edited)]) == 2
    err = capsys.readouterr().err
    assert "k_max = 31 lies outside what was tuned (2..6)" in err and "edited.json" in err


def test_export_caps_loudly_a_draft_above_the_tuned_kmax(tmp_path, capsys, tune_cli):
    # tlt's budgets (up to 8, not searched) exceed this simulation's kmax 6.
    out = tmp_path / "out"
    assert tune_cli.tune(out, family="tlt", trials="2") == 0
    capsys.readouterr()
    vllm = tmp_path / "vllm.json"
    assert main(["export-vllm", str(out / "best_policy.json"), "--out", str(vllm)]) == 0
    assert "warning: CLIPPED" in capsys.readouterr().err
    data = json.loads(vllm.read_text())
    assert data["speculative_config"]["num_speculative_tokens"] == 6 and data["clipped"]


def test_a_study_name_of_another_family_is_refused(tmp_path, capsys, tune_cli):
    out = tmp_path / "out"
    assert tune_cli.tune(out, "--study", "shared", family="das", trials="2") == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert tune_cli.tune(out, "--study", "shared", family="threshold", trials="2") == 2
    err = capsys.readouterr().err
    assert "study 'shared'" in err and "tunes 'das', not 'threshold'" in err and "Traceback" not in err
    assert _snapshot(out) == before


def _wait_complete(url, name, n, proc, timeout=120):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline and proc.poll() is None:  # not a timing assertion: a wait
        time.sleep(0.3)
        try:
            seen = [t for t in _study_trials(url, name) if t.state.name == "COMPLETE"]
        except Exception:  # noqa: BLE001 - the database is being created
            continue
        if len(seen) >= n:
            break
    return seen


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_is_one_line_exit_130_and_keeps_the_finished_trials(tmp_path, tune_cli, workers):
    cfg = tune_cli.config()
    out = tmp_path / "out"
    env = {**os.environ, "SPECROLL_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "specroll", "tune", str(cfg), "--family", "das", "--out", str(out),
           *(["--workers", str(workers)] if workers > 1 else [])]
    # Its own process group, as a terminal's: Ctrl-C reaches every worker at once.
    proc = subprocess.Popen([*cmd, "--trials", "100000"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    url = f"sqlite:///{out / 'study.db'}"
    try:
        seen = _wait_complete(url, "specroll-das", 4, proc)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    # The status line of the start, then one line: no traceback, no Optuna warning.
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("tune das: ")]
    assert len(lines) == 1 and lines[0].startswith("specroll: interrupted: "), stderr
    assert "finished trial(s) kept" in lines[0] and "re-run the same command" in lines[0]
    kept = {(t.number, t.value) for t in _study_trials(url, "specroll-das") if t.state.name == "COMPLETE"}
    assert {(t.number, t.value) for t in seen} <= kept and len(kept) >= 4
    rc = subprocess.run([*cmd, "--trials", str(len(kept) + 1)], env=env, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    final = {(t.number, t.value) for t in _study_trials(url, "specroll-das") if t.state.name == "COMPLETE"}
    assert kept <= final and len(final) == len(kept) + 1


def test_two_workers_run_exactly_the_trials_asked_for(tmp_path, tune_cli):
    out = tmp_path / "out"
    journal = tmp_path / "s.journal"
    assert tune_cli.tune(out, "--workers", "2", "--storage", f"journal:{journal}", family="das",
                         trials="12") == 0
    summary = json.loads((out / "tune_summary.json").read_text())
    assert summary["workers"] == 2 and summary["n_complete"] == 12 == len(tune_cli.complete(out))
    import pandas as pd

    hist = pd.read_parquet(out / "history.parquet")
    assert hist["worker"].nunique() == 2  # both processes ran trials
    assert (hist["state"] == "COMPLETE").sum() == 12
