"""`specroll tune` on real databases: PostgreSQL (a server the `postgres_url` fixture starts), the
journal, several independent commands on one study (what several machines do), and each storage
failure as one clear error, exit 2, with nothing lost."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from specroll.cli import main


def _complete(url, study):
    import optuna

    trials = optuna.load_study(study_name=study, storage=url).trials
    return [t for t in trials if t.state.name == "COMPLETE"]


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()} if Path(
        folder).exists() else {}


def test_postgres_with_two_workers(tmp_path, tune_cli, postgres_url):
    out = tmp_path / "out"
    assert tune_cli.tune(out, "--storage", postgres_url, "--study", "pg-two", "--workers", "2", family="das",
                         trials="10") == 0
    assert len(_complete(postgres_url, "pg-two")) == 10
    summary = json.loads((out / "tune_summary.json").read_text())
    assert summary["n_complete"] == 10 and summary["workers"] == 2
    assert "tune-secret" not in summary["storage"] and "***" in summary["storage"]  # password masked
    assert not (out / "study.db").exists()


def test_independent_commands_on_one_study_end_with_exactly_the_trials_asked_for(tmp_path, tune_cli,
                                                                                 postgres_url):
    """Two machines: the same command, the same --storage and --study, started at once."""
    cfg = tune_cli.config()
    env = {**os.environ, "SPECROLL_PROGRESS": "0"}
    procs = [subprocess.Popen([sys.executable, "-m", "specroll", "tune", str(cfg), "--family", "das",
                               "--trials", "14", "--storage", postgres_url, "--study", "machines",
                               "--out", str(tmp_path / f"m{i}")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert len(_complete(postgres_url, "machines")) == 14
    for i in range(2):  # each writes the same best: the study's
        assert json.loads((tmp_path / f"m{i}" / "tune_summary.json").read_text())["n_complete"] == 14


def _fails(capsys, argv, needle, *, secret=None):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err
    assert len([ln for ln in err.splitlines() if ln.startswith("specroll: error:")]) == 1, err
    if secret is not None:
        assert secret not in err
    return err


def test_an_unreachable_database_is_one_clear_error(tmp_path, capsys, tune_cli, unused_port):
    url = f"postgresql://someone:hunter2@127.0.0.1:{unused_port}/specroll"
    out = tmp_path / "out"
    _fails(capsys, ["tune", str(tune_cli.config()), "--family", "das", "--trials", "2", "--storage", url,
                    "--out", str(out)], "cannot reach the database server", secret="hunter2")
    assert not (out / "best_policy.json").exists()


def test_wrong_credentials_are_one_clear_error(tmp_path, capsys, tune_cli, postgres_url):
    url = postgres_url.replace("tune-secret", "not-the-password")
    _fails(capsys, ["tune", str(tune_cli.config()), "--family", "das", "--trials", "2", "--storage", url,
                    "--out", str(tmp_path / "out")], "refused the credentials", secret="not-the-password")
    missing = postgres_url.rsplit("/", 1)[0] + "/nosuchdb"
    _fails(capsys, ["tune", str(tune_cli.config()), "--family", "das", "--trials", "2", "--storage", missing,
                    "--out", str(tmp_path / "out")], "does not exist", secret="tune-secret")


def test_an_unknown_kind_of_database_is_one_clear_error(tmp_path, capsys, tune_cli):
    _fails(capsys, ["tune", str(tune_cli.config()), "--family", "das", "--trials", "2", "--storage",
                    "nosuchdb://x/y", "--out", str(tmp_path / "out")], "not a usable database URL")


def test_a_read_only_sqlite_url_is_one_clear_error_and_the_study_is_untouched(tmp_path, capsys, tune_cli):
    out = tmp_path / "out"
    assert tune_cli.tune(out, family="das", trials="2") == 0
    before = _files(out)
    url = f"sqlite:///file:{out / 'study.db'}?mode=ro&uri=true"
    _fails(capsys, ["tune", str(tune_cli.config()), "--family", "das", "--trials", "4", "--storage", url,
                    "--out", str(out)], "the study database is read-only")
    assert _files(out) == before


def _make_read_only(path):
    """Read-only even for root (chattr +i, where root is what runs the tests), else chmod 444."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return lambda: path.chmod(0o644)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
        pytest.skip("running as root and this file system has no immutable flag (chattr +i)")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_study_file_is_one_clear_error_and_nothing_is_lost(tmp_path, capsys, tune_cli):
    out = tmp_path / "out"
    assert tune_cli.tune(out, family="das", trials="2") == 0
    before = _files(out)
    undo = _make_read_only(out / "study.db")
    try:
        _fails(capsys, ["tune", str(tune_cli.config()), "--family", "das", "--trials", "4",
                        "--out", str(out)], "the study database is read-only")
    finally:
        undo()
    assert _files(out) == before
