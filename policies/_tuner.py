"""Optuna search over a policy family's parameters against an objective (simulated step time).

The study lives in a real database (policies/_storage.py: SQLite ``DIR/study.db`` by default, a
journal file for several processes on one machine, PostgreSQL for many machines). Every finished
trial is committed when it finishes, so an interrupt loses at most the trials in flight, and
re-running resumes: ``n_trials`` is the total wanted. A study records what it measures
(policies/_identity.py) and refuses to be resumed by a run that measures something else.

Search spaces come from the family's ``Params`` dataclass: fields declared with
``field(default=..., metadata=tunable(low, high, ...))`` are searched, the rest keep their value.
A field declared ``draft=True`` is a draft length: its upper bound is clipped to the ``kmax`` the
simulation can express (the drafter's proposal cap), so no tuned value is one no trial simulated.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from specroll.core.errors import SpecrollError
from specroll.core.fileio import atomic_path
from specroll.core.progress import progress
from specroll.policies._base import POLICIES, Policy, save_policy_file
from specroll.policies._identity import ATTR, check_identity, study_identity
from specroll.policies._storage import (
    GRACE_S,
    HEARTBEAT_S,
    describe,
    open_storage,
    storage_error,
    storage_spec,
)
from specroll.policies._workers import run_workers, work


def tunable(low: float | None = None, high: float | None = None, *, log: bool = False,
            step: float | None = None, choices: tuple | None = None, draft: bool = False) -> dict[str, Any]:
    """Field metadata marking a policy parameter as searched by the tuner; ``draft``: a draft length
    in tokens (its upper bound is clipped to the simulation's kmax)."""
    if choices is None and (low is None or high is None or not low <= high):
        raise ValueError("tunable needs low <= high, or choices")
    return {"tune": {"low": low, "high": high, "log": log, "step": step, "choices": choices, "draft": draft}}


def search_space(family: str, kmax: int | None = None) -> dict[str, dict[str, Any]]:
    """The searched parameters of a family: {name: spec} from its Params metadata, draft lengths
    clipped to ``kmax`` when given."""
    cls = POLICIES.get(family)
    out = {}
    for f in dataclasses.fields(cls.Params):
        if "tune" not in f.metadata:
            continue
        spec = dict(f.metadata["tune"])
        if kmax is not None and spec.get("draft") and spec["high"] > kmax:
            spec["low"], spec["high"] = min(spec["low"], kmax), kmax
        out[f.name] = spec
    return out


def clipped_bounds(family: str, kmax: int | None) -> dict[str, dict[str, list]]:
    """The draft-length bounds that ``kmax`` clips: {name: {"declared": [lo, hi], "searched": [lo, hi]}}."""
    declared, searched = search_space(family), search_space(family, kmax)
    return {k: {"declared": [v["low"], v["high"]], "searched": [searched[k]["low"], searched[k]["high"]]}
            for k, v in declared.items() if v != searched[k]}


def suggest_params(trial: Any, family: str, fixed: dict[str, Any] | None = None,
                   space: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Ask the trial for every searched parameter of ``family`` not pinned in ``fixed``."""
    cls = POLICIES.get(family)
    defaults = {f.name: f.default for f in dataclasses.fields(cls.Params)}
    params: dict[str, Any] = {}
    for name, spec in (space if space is not None else search_space(family)).items():
        if fixed and name in fixed:
            continue
        params[name] = suggest_one(trial, name, spec, defaults.get(name))
    params.update(fixed or {})
    return params


def suggest_one(trial: Any, name: str, spec: dict[str, Any], default: Any) -> Any:
    """One searched value: categorical for choices and booleans, integer where the default is one."""
    if spec["choices"] is not None:
        return trial.suggest_categorical(name, list(spec["choices"]))
    if isinstance(default, bool):
        return trial.suggest_categorical(name, [False, True])
    if isinstance(default, int):
        return trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=spec["log"],
                                 step=int(spec["step"] or 1))
    return trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=spec["log"],
                               step=spec["step"])


def default_params(family: str, fixed: dict[str, Any] | None = None,
                   space: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The family's source defaults of its searched parameters that lie inside the search space (a
    draft length above a clipped bound is clipped to it: the engine would clip it the same way)."""
    cls = POLICIES.get(family)
    defaults = {f.name: f.default for f in dataclasses.fields(cls.Params)}
    out = {}
    for name, spec in (space if space is not None else search_space(family)).items():
        v = defaults.get(name)
        if fixed and name in fixed or v is dataclasses.MISSING:
            continue
        if spec.get("draft") and spec["choices"] is None and v > spec["high"]:
            v = type(v)(spec["high"])
        inside = (v in spec["choices"] if spec["choices"] is not None
                  else isinstance(v, bool) or spec["low"] <= v <= spec["high"])
        if inside:
            out[name] = v
    return out


@dataclass
class TuneResult:
    """What a study found. ``history``: one row per trial (pandas; history.parquet on disk)."""

    best_policy: Policy
    best_value: float
    n_complete: int
    history: pd.DataFrame
    out_dir: Path
    study: str = ""
    storage: str = ""
    best_trial: int = -1
    best_params: dict[str, Any] = field(default_factory=dict)
    trials_run_now: int = 0
    workers: int = 1
    wall_s: float = 0.0
    identity: dict[str, Any] = field(default_factory=dict)
    search_space: dict[str, Any] = field(default_factory=dict)
    clipped: dict[str, Any] = field(default_factory=dict)
    kmax: int | None = None


def history_frame(study: Any) -> pd.DataFrame:
    """One row per trial: number, state, value, duration_s, worker, retry_of, surplus, param_*."""
    import pyarrow as pa

    rows = [{
        "number": t.number, "state": t.state.name,
        "value": float("nan") if t.value is None else float(t.value),
        "duration_s": float("nan") if t.duration is None else t.duration.total_seconds(),
        "worker": t.user_attrs.get("worker"), "retry_of": t.system_attrs.get("failed_trial"),
        "surplus": bool(t.user_attrs.get("surplus", False)),
        **{f"param_{k}": v for k, v in sorted(t.params.items())},
    } for t in study.trials]
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k.startswith("param_"), k != "number", k))
    return pa.table({k: [r.get(k) for r in rows] for k in keys}).to_pandas() if rows else pd.DataFrame()


def _write_history(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def _sampler(seed: int, n_trials: int) -> Any:
    import optuna

    # constant_liar: with several workers, a running trial counts as a bad result, so that workers
    # asking at the same time do not all sample the same point (no effect with one worker).
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, n_trials // 3)),
                                      constant_liar=True)


def _open_study(spec: str, name: str, family: str, ident: dict[str, Any], sampler: Any,
                hb: dict[str, int]) -> tuple[Any, Any]:
    """(study, raw storage), its family and identity checked and recorded (a write, so a read-only
    storage fails here, before any work)."""
    import optuna

    raw = open_storage(spec, **hb)
    try:
        study = optuna.create_study(storage=raw, study_name=name, sampler=sampler, direction="minimize",
                                    load_if_exists=True)
        attrs = study.user_attrs
        if attrs.get("family", family) != family:
            raise SpecrollError(f"study '{name}' in {describe(spec)} tunes '{attrs['family']}', "
                                f"not '{family}'",
                                field="--study", fix="use another --study name (default: specroll-FAMILY), "
                                                     "--storage or --out")
        check_identity(attrs.get(ATTR), ident, study=name, where=describe(spec), n_trials=len(study.trials))
        study.set_user_attr("family", family)
        study.set_user_attr(ATTR, ident)
    except SpecrollError:
        raise
    except Exception as exc:  # noqa: BLE001 - a storage failure (read-only, gone): one line
        raise storage_error(exc, spec) from None
    return study, raw


def tune(objective: Callable[[Policy], float], family: str, *, n_trials: int, out_dir: str | Path,
         storage: str | None = None, study_name: str | None = None, seed: int = 0,
         fixed: dict[str, Any] | None = None, start_from_defaults: bool = True,
         identity: dict[str, Any] | None = None, kmax: int | None = None, workers: int = 1,
         heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S,
         extra_space: dict[str, tuple[dict[str, Any], Any]] | None = None) -> TuneResult:
    """Minimize ``objective(policy)`` over ``family``'s searched parameters.

    ``n_trials`` is the total of complete trials wanted in the study: those already stored count.
    ``start_from_defaults``: a new study's first trial is the family's source defaults, so the
    best found is never worse than them on this objective (TPE then explores from there).
    ``identity``: what the objective measures (readable fields), recorded in the study and in
    best_policy.json; ``kmax``: the largest draft the objective can express (clips draft lengths).
    ``workers``: processes on this study (forked: they share what ``objective`` built).
    ``extra_space``: {name: (tunable spec, default)} searched with the policy's parameters but not
    the policy's (the cluster's dispatch parameters); the objective is then
    ``objective(policy, {name: value})`` and the best values are in ``best_params``.
    Writes ``out_dir``/best_policy.json and history.parquet (and the SQLite study by default).
    """
    import optuna

    out_dir = Path(out_dir)
    if not search_space(family):
        raise SpecrollError(f"policy family '{family}' has no tunable parameters", field="--family",
                            fix=f"tune one of: {', '.join(f for f in POLICIES.names() if search_space(f))}")
    if n_trials < 1:
        raise SpecrollError("need at least one trial", field="--trials", fix="pass --trials N with N >= 1")
    if workers < 1:
        raise SpecrollError(f"need at least one worker, got {workers}", field="--workers")
    fixed = dict(fixed or {})
    space = {k: v for k, v in search_space(family, kmax).items() if k not in fixed}
    extra = dict(extra_space or {})
    about = {**(identity or {}), **({"kmax": kmax} if kmax is not None else {})}
    ident = study_identity(family, fixed, {**space, **{k: v[0] for k, v in extra.items()}}, about)
    spec = storage_spec(storage, out_dir)
    if storage is None:
        out_dir.mkdir(parents=True, exist_ok=True)
    name = study_name or f"specroll-{family}"
    hb = {"heartbeat_s": heartbeat_s, "grace_s": grace_s}
    study, raw = _open_study(spec, name, family, ident, _sampler(seed, n_trials), hb)
    S = optuna.trial.TrialState
    done0 = len(study.get_trials(deepcopy=False, states=(S.COMPLETE,)))
    run_now = max(0, n_trials - done0)
    if start_from_defaults and not study.trials and run_now > 0:
        first = {**default_params(family, fixed, space), **{k: d for k, (_, d) in extra.items()}}
        study.enqueue_trial(first, skip_if_exists=True)

    def measure(trial: Any) -> float:
        try:
            policy = POLICIES.get(family)(**suggest_params(trial, family, fixed, space))
            chosen = {k: suggest_one(trial, k, sp, d) for k, (sp, d) in extra.items()}
        except SpecrollError as exc:
            # An infeasible combination (e.g. das short_frac > long_frac): not a result, not a crash.
            raise optuna.TrialPruned(f"invalid parameters: {exc.what}") from None
        value = float(objective(policy, chosen) if extra else objective(policy))
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"objective is {value}")
        return value

    max_pruned = max(20, 2 * run_now)
    bar = progress(total=run_now, desc=f"tune {family}", unit="trial")

    def on_trial(complete: int) -> None:
        bar.update(max(0, complete - done0 - bar.n))

    def child(i: int) -> None:  # a forked worker: its own connection, its own sampler stream
        st = open_storage(spec, **hb)
        mine = optuna.load_study(study_name=name, storage=st, sampler=_sampler(seed + i, n_trials))
        work(mine, measure, n_trials, max_pruned=max_pruned)

    if hasattr(raw, "engine"):
        raw.engine.dispose()  # no pooled connection may be shared with the forked workers
    t0 = time.perf_counter()
    try:
        run_workers(min(workers, max(1, run_now)),
                    lambda: work(study, measure, n_trials, max_pruned=max_pruned, on_trial=on_trial), child)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_kept(study, spec, name)) from None
    except (SpecrollError, optuna.exceptions.TrialPruned):
        raise
    except Exception as exc:
        if type(exc).__module__.startswith(("sqlalchemy", "psycopg", "sqlite3")) or isinstance(exc, OSError):
            raise storage_error(exc, spec) from None
        raise
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    complete = study.get_trials(deepcopy=False, states=(S.COMPLETE,))
    if not complete:
        raise SpecrollError("no trial completed", fix="check the objective's config")
    best = min(complete, key=lambda t: (t.value, t.number))
    mine = {k: v for k, v in best.params.items() if k not in extra}  # the policy's own parameters
    best_policy = POLICIES.get(family)(**{**mine, **fixed})
    frame = history_frame(study)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_policy_file(best_policy, out_dir / "best_policy.json", objective_s=best.value, trial=best.number,
                     n_complete=len(complete), study=name, tuning=ident)
    _write_history(frame, out_dir / "history.parquet")
    return TuneResult(best_policy, float(best.value), len(complete), frame, out_dir, study=name,
                      storage=describe(spec), best_trial=best.number, best_params=dict(best.params),
                      trials_run_now=len(complete) - done0, workers=workers, wall_s=wall, identity=ident,
                      search_space=space, kmax=kmax,
                      clipped={k: v for k, v in clipped_bounds(family, kmax).items() if k in space})


def _kept(study: Any, spec: str, name: str) -> str:
    """The one line an interrupted study leaves: what is kept and how to go on."""
    try:
        from optuna.trial import TrialState

        n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        kept = f"{n} finished trial(s) kept"
    except Exception:  # noqa: BLE001 - the storage itself may be what broke
        kept = "finished trials kept"
    return f"{kept} in study '{name}' ({describe(spec)}); re-run the same command to resume"
