import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from specroll.core.errors import SpecrollError
from specroll.policies import POLICIES, Policy, load_policy_file, register_policy
from specroll.policies._tuner import search_space, tunable, tune


def _ensure_toy_family():
    if "toy-quadratic" in POLICIES:
        return

    @register_policy("toy-quadratic")
    class Toy(Policy):
        @dataclasses.dataclass
        class Params:
            k: int = dataclasses.field(default=4, metadata=tunable(0, 16))
            h: float = dataclasses.field(default=0.5, metadata=tunable(0.0, 1.0))
            fixed_thing: int = 3

        def decide(self, state):
            return np.full(state.n, self.params.k, dtype=np.int32)


def _objective(policy):
    # Minimum at k=7, h=0.3: a smooth bowl the sampler can find.
    return (policy.params.k - 7) ** 2 + 10 * (policy.params.h - 0.3) ** 2 + 1.0


def test_search_space_reads_field_metadata():
    _ensure_toy_family()
    assert set(search_space("toy-quadratic")) == {"k", "h"}


def test_tune_finds_the_bowl_and_writes_best_policy(tmp_path):
    _ensure_toy_family()
    res = tune(_objective, "toy-quadratic", n_trials=40, out_dir=tmp_path, seed=1)
    assert res.n_complete == 40
    assert res.best_value < 3.0  # random search alone rarely gets here in 40 trials on this bowl
    best = load_policy_file(tmp_path / "best_policy.json")
    assert best.params.k == res.best_policy.params.k
    assert (tmp_path / "history.parquet").exists() and (tmp_path / "study.db").exists()


def test_seeded_sequential_runs_are_reproducible(tmp_path):
    _ensure_toy_family()
    a = tune(_objective, "toy-quadratic", n_trials=15, out_dir=tmp_path / "a", seed=5)
    b = tune(_objective, "toy-quadratic", n_trials=15, out_dir=tmp_path / "b", seed=5)
    assert a.history["value"].tolist() == b.history["value"].tolist()


def test_rerun_resumes_instead_of_restarting(tmp_path):
    _ensure_toy_family()
    tune(_objective, "toy-quadratic", n_trials=5, out_dir=tmp_path, seed=2)
    res = tune(_objective, "toy-quadratic", n_trials=8, out_dir=tmp_path, seed=2)
    assert res.n_complete == 8 and len(res.history) == 8


def test_journal_storage(tmp_path):
    _ensure_toy_family()
    res = tune(_objective, "toy-quadratic", n_trials=4, out_dir=tmp_path,
               storage=f"journal:{tmp_path / 'study.journal'}", seed=0)
    assert res.n_complete == 4 and (tmp_path / "study.journal").exists()


def test_family_without_tunables_and_bad_storage_are_clear(tmp_path):
    with pytest.raises(SpecrollError, match="no tunable parameters"):
        tune(_objective, "ar", n_trials=3, out_dir=tmp_path)
    _ensure_toy_family()
    with pytest.raises(SpecrollError, match="neither a database URL"):
        tune(_objective, "toy-quadratic", n_trials=3, out_dir=tmp_path, storage="nonsense")


_SCRIPT = textwrap.dedent("""
    import dataclasses, sys, time
    import numpy as np
    from specroll.policies import Policy, register_policy
    from specroll.policies._tuner import tune, tunable

    @register_policy("toy-slow")
    class Toy(Policy):
        @dataclasses.dataclass
        class Params:
            k: int = dataclasses.field(default=4, metadata=tunable(0, 16))
        def decide(self, state):
            return np.zeros(state.n, dtype=np.int32)

    def objective(p):
        time.sleep(float(sys.argv[2]))
        return float((p.params.k - 7) ** 2)

    tune(objective, "toy-slow", n_trials=int(sys.argv[3]), out_dir=sys.argv[1], seed=0)
""")


def _complete_trials(db):
    import optuna

    study = optuna.load_study(study_name="specroll-toy-slow", storage=f"sqlite:///{db}")
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def test_sigkill_loses_no_finished_trial(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "SPECROLL_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "out"), "0.3", "30"], env=env)
    db = tmp_path / "out" / "study.db"
    deadline = time.monotonic() + 120
    before = []
    while time.monotonic() < deadline:  # wait (not a timing assertion) until some trials are done
        time.sleep(0.5)
        if db.exists():
            try:
                before = _complete_trials(db)
            except Exception:
                continue
            if len(before) >= 3:
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(before) >= 3
    kept = {(t.number, t.value) for t in before}
    after_kill = {(t.number, t.value) for t in _complete_trials(db)}
    assert kept <= after_kill
    # Re-running finishes the study: the killed run's finished trials are still there.
    subprocess.run([sys.executable, str(script), str(tmp_path / "out"), "0.0", "12"], env=env, check=True)
    final = {(t.number, t.value) for t in _complete_trials(db)}
    assert kept <= final and len(final) == 12


def _ensure_constrained_family():
    if "toy-constrained" in POLICIES:
        return

    @register_policy("toy-constrained")
    class Toy(Policy):
        @dataclasses.dataclass
        class Params:
            lo: int = dataclasses.field(default=2, metadata=tunable(0, 10))
            hi: int = dataclasses.field(default=5, metadata=tunable(0, 10))

        def validate(self):
            if self.params.lo > self.params.hi:
                raise SpecrollError("need lo <= hi", field="lo")

        def decide(self, state):
            return np.zeros(state.n, dtype=np.int32)


def test_infeasible_trials_are_pruned_and_defaults_come_first(tmp_path):
    _ensure_constrained_family()
    res = tune(lambda p: float(p.params.hi - p.params.lo), "toy-constrained", n_trials=12, out_dir=tmp_path,
               seed=3)
    states = res.history["state"].tolist()
    assert res.n_complete == 12 and states.count("COMPLETE") == 12
    assert "PRUNED" in states  # lo > hi happens under random sampling of two independent ranges
    first = res.history.iloc[0]
    assert (first["param_lo"], first["param_hi"], first["value"]) == (2, 5, 3.0)
    assert res.best_value == 0.0


def test_workers_opening_a_new_sqlite_study_at_once_all_succeed(tmp_path):
    """Parallel workers (or a monitor) racing to create the schema of a new database: every one
    opens it (the schema creation's losers retry), and the study they share is one."""
    import threading

    from specroll.policies._storage import open_storage

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    gate = threading.Barrier(6)
    opened, errors = [], []

    def worker() -> None:
        gate.wait()
        try:
            opened.append(open_storage(url))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(opened) == 6
    from optuna.study import StudyDirection

    sid = opened[0].create_new_study([StudyDirection.MINIMIZE], "shared")
    assert all(s.get_study_id_from_name("shared") == sid for s in opened)
