"""Optuna search over a policy family's parameters against an objective (simulated step time).

Storage is a real database so that a study survives interrupts and can be shared:
- default: SQLite file ``DIR/study.db`` (every finished trial is committed when it finishes, so a
  SIGKILL loses at most the trial in flight; re-running resumes and runs only what is missing);
- ``journal:PATH`` (or a path ending in .journal/.log): Optuna's journal file, for several
  processes on one machine;
- any SQLAlchemy URL (``postgresql://...``) for many machines on one study.

Search spaces come from the family's ``Params`` dataclass: fields declared with
``field(default=..., metadata=tunable(low, high, ...))`` are searched, the rest keep their value.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specroll.core.errors import SpecrollError
from specroll.core.fileio import atomic_path, write_json
from specroll.core.progress import progress
from specroll.policies._base import POLICIES, Policy, save_policy_file

# A finished trial is kept; one killed mid-way is marked failed once its heartbeat is this stale.
_OPEN_TRIES = 8  # opening a new database that other processes are creating too
_HEARTBEAT_S = 5
_GRACE_S = 20


def tunable(low: float | None = None, high: float | None = None, *, log: bool = False,
            step: float | None = None, choices: tuple | None = None) -> dict[str, Any]:
    """Field metadata marking a policy parameter as searched by the tuner."""
    if choices is None and (low is None or high is None or not low <= high):
        raise ValueError("tunable needs low <= high, or choices")
    return {"tune": {"low": low, "high": high, "log": log, "step": step, "choices": choices}}


def search_space(family: str) -> dict[str, dict[str, Any]]:
    """The searched parameters of a family: {name: spec} from its Params metadata."""
    cls = POLICIES.get(family)
    return {f.name: f.metadata["tune"] for f in dataclasses.fields(cls.Params) if "tune" in f.metadata}


def suggest_params(trial: Any, family: str, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ask the trial for every searched parameter of ``family`` not pinned in ``fixed``."""
    cls = POLICIES.get(family)
    defaults = {f.name: f.default for f in dataclasses.fields(cls.Params)}
    params: dict[str, Any] = {}
    for name, spec in search_space(family).items():
        if fixed and name in fixed:
            continue
        if spec["choices"] is not None:
            params[name] = trial.suggest_categorical(name, list(spec["choices"]))
        elif isinstance(defaults.get(name), bool):
            params[name] = trial.suggest_categorical(name, [False, True])
        elif isinstance(defaults.get(name), int):
            params[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=spec["log"],
                                             step=int(spec["step"] or 1))
        else:
            params[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]),
                                               log=spec["log"], step=spec["step"])
    params.update(fixed or {})
    return params


def make_storage(storage: str | None, out_dir: Path) -> Any:
    """Resolve a storage spec (None, journal:PATH, *.journal, SQLAlchemy URL) to an Optuna storage."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if storage is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(out_dir / 'study.db').resolve()}"
    if storage.startswith("journal:") or storage.endswith((".journal", ".log")):
        path = Path(storage.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in storage:
        raise SpecrollError(f"storage '{storage}' is neither a database URL nor a journal file",
                            field="--storage",
                            fix="use sqlite:///study.db, postgresql://..., or journal:PATH")
    # Several workers (or a monitor) opening a new database at once race to create its schema: the
    # losers fail with IntegrityError / "table already exists" / "database is locked" while the
    # winner finishes. Such a failure is transient: retry (with a growing pause) before giving up.
    attempt = 0
    while True:
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and what we need
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(storage, heartbeat_interval=_HEARTBEAT_S, grace_period=_GRACE_S)
        except Exception as exc:  # SQLAlchemy raises many types for a bad URL or an unreachable server
            attempt += 1
            if type(exc).__name__ in ("IntegrityError", "OperationalError") and attempt < _OPEN_TRIES:
                time.sleep(0.05 * attempt)
                continue
            raise SpecrollError(f"cannot open study storage '{storage}': {exc}", field="--storage",
                                fix="check the URL and that the database is reachable") from None
        finally:
            optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class TuneResult:
    best_policy: Policy
    best_value: float
    n_complete: int
    history: list[dict[str, Any]]
    out_dir: Path


def _history_rows(study: Any) -> list[dict[str, Any]]:
    rows = []
    for t in study.trials:
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "value": float("nan") if t.value is None else float(t.value),
            "duration_s": float("nan") if t.duration is None else t.duration.total_seconds(),
            **{f"param_{k}": v for k, v in sorted(t.params.items())},
        })
    return rows


def _write_history(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = sorted({k for r in rows for k in r}, key=lambda k: (not k.startswith(("number", "state")), k))
    table = pa.table({k: [r.get(k) for r in rows] for k in keys}) if rows else pa.table({})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def default_params(family: str, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The family's source defaults of its searched parameters that lie inside the search space."""
    cls = POLICIES.get(family)
    defaults = {f.name: f.default for f in dataclasses.fields(cls.Params)}
    out = {}
    for name, spec in search_space(family).items():
        v = defaults.get(name)
        if fixed and name in fixed or v is dataclasses.MISSING:
            continue
        inside = (v in spec["choices"] if spec["choices"] is not None
                  else isinstance(v, bool) or spec["low"] <= v <= spec["high"])
        if inside:
            out[name] = v
    return out


def tune(objective: Callable[[Policy], float], family: str, *, n_trials: int, out_dir: str | Path,
         storage: str | None = None, study_name: str | None = None, seed: int = 0,
         fixed: dict[str, Any] | None = None, start_from_defaults: bool = True,
         summary_extra: dict[str, Any] | None = None) -> TuneResult:
    """Minimize ``objective(policy)`` over ``family``'s searched parameters.

    ``n_trials`` is the total wanted in the study: completed trials already stored count, so an
    interrupted run re-run with the same arguments finishes the remainder and keeps the rest.
    ``start_from_defaults``: a new study's first trial is the family's source defaults, so the
    best found is never worse than them on this objective (TPE then explores from there).
    ``summary_extra`` is merged into tune_summary.json.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out_dir = Path(out_dir)
    if not search_space(family):
        raise SpecrollError(f"policy family '{family}' has no tunable parameters", field="--family",
                            fix=f"tune one of: {', '.join(f for f in POLICIES.names() if search_space(f))}")
    if n_trials < 1:
        raise SpecrollError("need at least one trial", field="--trials", fix="pass --trials N with N >= 1")
    study = optuna.create_study(
        storage=make_storage(storage, out_dir),
        study_name=study_name or f"specroll-{family}",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, n_trials // 3))),
        direction="minimize",
        load_if_exists=True,
    )
    if study.user_attrs.get("family", family) != family:
        other = study.user_attrs["family"]
        raise SpecrollError(f"study '{study.study_name}' tunes '{other}', not '{family}'",
                            field="--study", fix="use another --study name or --storage")
    study.set_user_attr("family", family)
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    remaining = max(0, n_trials - done)
    run_now = remaining
    if start_from_defaults and not study.trials and remaining > 0:
        study.enqueue_trial(default_params(family, fixed), skip_if_exists=True)

    def _objective(trial: Any) -> float:
        try:
            policy = POLICIES.get(family)(**suggest_params(trial, family, fixed))
        except SpecrollError as exc:
            # An infeasible combination (e.g. das short_frac > long_frac): not a result, not a crash.
            raise optuna.TrialPruned(f"invalid parameters: {exc.what}") from None
        value = float(objective(policy))
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"objective is {value}")
        return value

    def _tick(s: Any, t: Any) -> None:
        if t.state == optuna.trial.TrialState.COMPLETE:
            bar.update(1)

    bar = progress(total=remaining, desc=f"tune {family}", unit="trial")
    t0 = time.perf_counter()
    # Pruned (infeasible) trials do not count: run rounds until n_trials are complete, giving up
    # after many pruned ones (a search space with few or no feasible points).
    n_before = len(study.trials)
    max_pruned = max(20, 2 * run_now)
    while remaining > 0:
        study.optimize(_objective, n_trials=remaining, callbacks=[_tick], catch=(FloatingPointError,))
        done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        remaining = max(0, n_trials - done)
        if len(study.trials) - n_before - (run_now - remaining) >= max_pruned:
            break
    bar.close()
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise SpecrollError("no trial completed", fix="check the objective's config")
    best = min(complete, key=lambda t: (t.value, t.number))
    best_policy = POLICIES.get(family)(**{**suggest_params(_FrozenAsk(best), family, fixed)})
    rows = _history_rows(study)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_policy_file(best_policy, out_dir / "best_policy.json", objective_s=best.value,
                     trial=best.number, n_complete=len(complete), study=study.study_name)
    _write_history(rows, out_dir / "history.parquet")
    write_json(out_dir / "tune_summary.json", {
        "family": family, "study": study.study_name, "n_complete": len(complete),
        "best_value_s": best.value, "best_params": best.params, "trials_run_now": run_now,
        "wall_s": time.perf_counter() - t0,
        "values": [r["value"] for r in rows if r["state"] == "COMPLETE"],
        **(summary_extra or {}),
    })
    return TuneResult(best_policy, float(best.value), len(complete), rows, out_dir)


class _FrozenAsk:
    """Replays a finished trial's parameters through suggest_params (same types, same fixed)."""

    def __init__(self, trial: Any) -> None:
        self._p = trial.params

    def suggest_categorical(self, name: str, choices: list) -> Any:
        return self._p[name]

    def suggest_int(self, name: str, *a: Any, **k: Any) -> int:
        return int(self._p[name])

    def suggest_float(self, name: str, *a: Any, **k: Any) -> float:
        return float(self._p[name])
