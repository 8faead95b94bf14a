"""The tuner on real storages: SQLite, the journal file and a real PostgreSQL server (started by the
`postgres_url` fixture, tests/conftest.py); worker death (kill -9 mid-trial) on PostgreSQL and on
the journal; what optuna-dashboard reads."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from wsgiref.util import setup_testing_defaults

import pytest

SCRIPT = textwrap.dedent("""
    import dataclasses, sys, time
    import numpy as np
    from specroll.policies import Policy, register_policy, tunable, tune

    @register_policy("toy-slow")
    class Toy(Policy):
        @dataclasses.dataclass
        class Params:
            k: int = dataclasses.field(default=4, metadata=tunable(0, 16))
            h: float = dataclasses.field(default=0.5, metadata=tunable(0.0, 1.0))
        def decide(self, state):
            return np.zeros(state.n, dtype=np.int32)

    def objective(p):
        time.sleep(float(sys.argv[4]))
        return float((p.params.k - 7) ** 2 + p.params.h)

    out, storage, study, _, trials, workers = sys.argv[1:7]
    res = tune(objective, "toy-slow", n_trials=int(trials), out_dir=out, storage=storage, study_name=study,
               seed=0, workers=int(workers), heartbeat_s=1, grace_s=3)
    print(res.n_complete, res.trials_run_now)
""")


@pytest.fixture(params=["sqlite", "journal", "postgresql"])
def storage(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    if request.param == "journal":
        return f"journal:{tmp_path / 'study.journal'}"
    return request.getfixturevalue("postgres_url")


def _run(tmp_path, storage, study, *, sleep=0.0, trials=6, workers=1, **popen):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "SPECROLL_PROGRESS": "0"}
    argv = [sys.executable, str(script), str(tmp_path / "out"), storage, study, str(sleep), str(trials),
            str(workers)]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _optuna_storage(storage):
    """The storage as Optuna's own API opens it (what optuna-dashboard does)."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if storage.startswith("journal:"):
        return JournalStorage(JournalFileBackend(storage.removeprefix("journal:")))
    return RDBStorage(storage)


def _trials(storage, study):
    import optuna

    opened = storage if not isinstance(storage, str) else _optuna_storage(storage)
    return optuna.load_study(study_name=study, storage=opened).trials


def test_optunas_own_api_reads_the_trials_and_their_attributes(tmp_path, storage):
    study = f"toy-{uuid.uuid4().hex[:8]}"
    proc = _run(tmp_path, storage, study, trials=5, workers=2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    import optuna

    loaded = optuna.load_study(study_name=study, storage=_optuna_storage(storage))
    complete = [t for t in loaded.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 5
    assert loaded.user_attrs["family"] == "toy-slow"
    assert loaded.user_attrs["identity"]["search_space"]["k"]["high"] == 16
    assert all(":" in t.user_attrs["worker"] for t in complete)  # HOST:PID of the worker that ran it
    best = json.loads((tmp_path / "out" / "best_policy.json").read_text())
    assert best["tuning"] == loaded.user_attrs["identity"] and best["study"] == study


def test_optuna_dashboard_lists_the_study_and_its_trials(tmp_path):
    dashboard = pytest.importorskip("optuna_dashboard")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = _run(tmp_path, storage, "dash", trials=3)
    assert proc.communicate(timeout=300) and proc.returncode == 0
    app = dashboard.wsgi(storage)

    def get(path):
        env = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
        setup_testing_defaults(env)
        status = []
        body = b"".join(app(env, lambda s, h, *a: status.append(s)))
        assert status[0].startswith("200"), (path, status)
        return json.loads(body)

    studies = get("/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["dash"]
    detail = get(f"/api/studies/{studies[0]['study_id']}")
    assert len(detail["trials"]) == 3
    assert any(a["key"] == "worker" for a in detail["trials"][0]["user_attrs"])
    assert any(a["key"] == "identity" for a in detail["user_attrs"])  # what the study measures


@pytest.mark.parametrize("backend", ["journal", "postgresql"])
def test_kill_9_of_a_worker_mid_trial_loses_nothing_and_ends_with_exactly_n_trials(tmp_path, request,
                                                                                    backend):
    storage = (f"journal:{tmp_path / 'study.journal'}" if backend == "journal"
               else request.getfixturevalue("postgres_url"))
    study, n = f"kill-{uuid.uuid4().hex[:8]}", 10
    proc = _run(tmp_path, storage, study, sleep=1.0, trials=n, workers=3)
    victim, done_before, deadline, watch = None, set(), time.monotonic() + 120, None
    try:
        while victim is None and time.monotonic() < deadline and proc.poll() is None:  # a wait, not a timing
            time.sleep(0.1)
            try:
                watch = watch or _optuna_storage(storage)
                trials = _trials(watch, study)
            except Exception:  # noqa: BLE001 - the study is being created
                continue
            done_before = {(t.number, t.value) for t in trials if t.state.name == "COMPLETE"}
            for t in trials:
                pid = int(t.user_attrs.get("worker", ":0").split(":")[1])
                young = t.datetime_start and time.time() - t.datetime_start.timestamp() < 0.6
                measuring = t.state.name == "RUNNING" and len(t.params) == 2 and young  # inside the objective
                if measuring and pid not in (0, proc.pid) and len(done_before) >= 2:
                    os.kill(pid, signal.SIGKILL)  # a forked worker, >= 0.4 s before its trial ends
                    victim = t.number
                    break
        assert victim is not None, "no worker seen mid-trial"
        assert next(t for t in _trials(watch, study) if t.number == victim).state.name == "RUNNING"
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    trials = _trials(storage, study)
    final = {(t.number, t.value) for t in trials if t.state.name == "COMPLETE"}
    assert done_before <= final and len(final) == n  # nothing lost, exactly --trials complete
    dead = next(t for t in trials if t.number == victim)
    assert dead.state.name == "FAIL"  # marked failed by the heartbeat ...
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == victim]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"  # ... and its parameters re-run
    assert retried[0].params == dead.params


def test_resuming_with_changed_pins_on_postgres_names_the_difference(tmp_path, postgres_url):
    from specroll.core.errors import SpecrollError
    from specroll.policies import tune

    study = f"pins-{uuid.uuid4().hex[:8]}"

    def objective(policy):
        return float(policy.params.h)

    tune(objective, "threshold", n_trials=2, out_dir=tmp_path, storage=postgres_url, study_name=study,
         fixed={"k_min": 0})
    with pytest.raises(SpecrollError, match=r"measures something else .*pins\.k_min: 0 -> 1"):
        tune(objective, "threshold", n_trials=3, out_dir=tmp_path, storage=postgres_url, study_name=study,
             fixed={"k_min": 1})
    assert len(_trials(postgres_url, study)) == 2
