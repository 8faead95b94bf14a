"""Where a study lives: SQLite (default), Optuna's journal file, or any SQLAlchemy URL (PostgreSQL).

Every storage gets a heartbeat: each running trial beats every ``heartbeat_s`` seconds, and a trial
whose beat is older than ``grace_s`` belongs to a dead worker (kill -9, a lost machine). Any worker
that looks marks it failed and re-queues its parameters (Optuna's RetryHeartbeatStaleTrialCallback,
formerly RetryFailedTrialCallback), so the study still ends with the number of trials asked for.
Optuna's RDB storage has the heartbeat built in; its journal storage does not, so
:class:`_HeartbeatJournal` adds one (a system attribute per trial, in the same journal file).

Errors a user can cause (an unreachable server, wrong credentials, a read-only file, a missing
driver) become one :class:`SpecrollError` each; the URL is shown with its password masked.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import Any

from specroll.core.errors import SpecrollError

HEARTBEAT_S = 2
GRACE_S = 10
MAX_RETRY = 3  # a trial whose workers keep dying is given up after this many re-runs
_OPEN_TRIES = 8  # opening a new database that other processes are creating too
_BEAT_KEY = "specroll:heartbeat"
_URLS = "sqlite:///PATH, postgresql://USER:PASSWORD@HOST:PORT/DB, or journal:PATH"


def storage_spec(storage: str | None, out_dir: str | Path) -> str:
    """The storage as a string every worker can open: a SQLAlchemy URL or ``journal:ABSPATH``."""
    if storage is None:
        return f"sqlite:///{(Path(out_dir) / 'study.db').resolve()}"
    if storage.startswith("journal:") or storage.endswith((".journal", ".log")):
        return "journal:" + str(Path(storage.removeprefix("journal:")).resolve())
    if "://" not in storage:
        raise SpecrollError(f"storage '{storage}' is neither a database URL nor a journal file",
                            field="--storage",
                            fix=f"use {_URLS}")
    return storage


def describe(spec: str) -> str:
    """The storage for messages: the password of a URL masked."""
    if spec.startswith(("journal:", "sqlite")):  # a file: no credentials to hide
        return spec
    try:
        from sqlalchemy.engine import make_url

        return make_url(spec).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL: drop what may hold credentials
        return spec.split("@")[-1] if "@" in spec else spec


def open_storage(spec: str, *, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S) -> Any:
    """An Optuna storage for ``spec`` (from :func:`storage_spec`), with heartbeat and retry."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # "experimental" in Optuna since 2.8, and what we need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    if spec.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(spec.removeprefix("journal:"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return _HeartbeatJournal(JournalFileBackend(str(path)), heartbeat_s, grace_s, retry)
        except OSError as exc:
            raise SpecrollError(f"cannot open the journal file: {exc.strerror}", file=path, field="--storage",
                                fix="pass a journal path in a folder you can write") from None
    _check_sqlite_folder(spec)
    spec = _with_driver(spec)
    kwargs: dict[str, Any] = {}
    if spec.startswith("sqlite"):
        # Several workers on one file wait for each other's write lock instead of failing at once.
        kwargs["connect_args"] = {"timeout": 60}
    elif spec.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 10}  # a dead host: an error, not a hang
    # Several workers (or a monitor) opening a new database at once race to create its schema: the
    # losers fail with IntegrityError / "already exists" / "database is locked" while the winner
    # finishes. Such a failure is transient: retry (with a growing pause) before giving up.
    for attempt in range(1, _OPEN_TRIES + 1):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and what we need
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(spec, engine_kwargs=kwargs, heartbeat_interval=heartbeat_s,
                                  grace_period=grace_s, heartbeat_stale_trial_callback=retry)
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many types; classified below
            if attempt < _OPEN_TRIES and _is_schema_race(exc):
                time.sleep(0.05 * attempt)
                continue
            raise storage_error(exc, spec) from None
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _with_driver(spec: str) -> str:
    """``postgresql://`` means PostgreSQL through whichever driver is installed: SQLAlchemy 2.1's
    default is psycopg 3 (what specroll installs), 2.0's psycopg2."""
    if not spec.startswith("postgresql://"):
        return spec
    import importlib.util

    for module, scheme in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return scheme + spec.removeprefix("postgresql")
    return spec  # no driver: SQLAlchemy's ImportError becomes the 'install the driver' error


def _check_sqlite_folder(spec: str) -> None:
    if not spec.startswith("sqlite:///") or "mode=" in spec:
        return
    path = Path(spec.removeprefix("sqlite:///").split("?")[0])
    if not path.parent.is_dir():
        raise SpecrollError(f"folder {path.parent} does not exist", field="--storage",
                            fix="create it, or pass a SQLite URL in an existing folder")


def _is_schema_race(exc: Exception) -> bool:
    text = str(exc).lower()
    return type(exc).__name__ in ("IntegrityError", "OperationalError", "ProgrammingError") and any(
        s in text for s in ("already exists", "database is locked", "duplicate key", "unique constraint"))


def storage_error(exc: BaseException, spec: str) -> SpecrollError:
    """One clear SpecrollError for a failure to open or write the study storage."""
    where = describe(spec)
    chain: list[BaseException] = []  # Optuna wraps the driver's error (StorageInternalError from ...)
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    root = chain[-1]
    lines = str(getattr(root, "orig", None) or root).strip().splitlines()
    text = lines[0] if lines else type(root).__name__
    low = " ".join(str(x) for x in chain).lower()
    if spec in text or spec in low:  # never repeat a URL that may hold a password
        text, low = text.replace(spec, where), low.replace(spec.lower(), where.lower())
    if any(isinstance(x, ImportError) for x in chain) or "no module named" in low:
        return SpecrollError(f"the database driver is not installed ({text})", field="--storage",
                             fix="pip install 'psycopg[binary]' (PostgreSQL), or 'specroll[postgres]'")
    if "readonly database" in low or "read-only" in low or "permission denied" in low and "sqlite" in spec:
        return SpecrollError(f"the study database is read-only: {where}", field="--storage",
                             fix="make the file and its folder writable, or tune into another --out "
                                 "(copy the database there to keep its trials)")
    if "password authentication failed" in low or ("role" in low and "does not exist" in low):
        return SpecrollError(f"the database server refused the credentials in {where}", field="--storage",
                             fix="check the user name and password in the URL (postgresql://USER:PASSWORD@"
                                 "HOST:PORT/DB)")
    if "database" in low and "does not exist" in low:
        return SpecrollError(f"{text} on {where}", field="--storage",
                             fix="create it first (createdb NAME), or name an existing database in the URL")
    if any(s in low for s in ("connection refused", "could not connect", "could not translate host",
                              "timeout expired", "name or service not known", "no route to host",
                              "connection timed out", "server closed the connection")):
        return SpecrollError(f"cannot reach the database server of {where} ({text})", field="--storage",
                             fix="start the server, or check the host and port in the URL")
    if "unable to open database file" in low:
        return SpecrollError(f"cannot open the SQLite file of {where}", field="--storage",
                             fix="check the path and that its folder is writable")
    if "can't load plugin" in low or "could not parse" in low:
        return SpecrollError(f"not a usable database URL: {where} ({text})", field="--storage",
                             fix=f"use {_URLS}")
    return SpecrollError(f"cannot use the study storage {where}: {type(root).__name__}: {text}",
                         field="--storage", fix="check the URL and that the database is reachable")


_JOURNAL_CLASS: list[type] = []


def _HeartbeatJournal(backend: Any, heartbeat_s: int, grace_s: int, callback: Any) -> Any:  # noqa: N802
    """Optuna's journal storage with a heartbeat (the class is built on first use: importing Optuna
    costs half a second, which `specroll --help` should not pay)."""
    if not _JOURNAL_CLASS:
        _JOURNAL_CLASS.append(_journal_with_heartbeat())
    return _JOURNAL_CLASS[0](backend, heartbeat_s, grace_s, callback)


def _journal_with_heartbeat() -> type:
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat  # no public name; RDBStorage uses the same
    from optuna.trial import TrialState

    class HeartbeatJournal(JournalStorage, BaseHeartbeat):
        """The time of each beat is a trial system attribute in the same journal (one file on one
        machine, so one clock judges every beat)."""

        def __init__(self, backend: Any, heartbeat_s: int, grace_s: int, callback: Any) -> None:
            super().__init__(backend)
            self._beat_s, self._grace_s, self._callback = heartbeat_s, grace_s, callback

        def record_heartbeat(self, trial_id: int) -> None:
            # UpdateFinishedTrialError: another worker judged this trial dead meanwhile.
            with contextlib.suppress(UpdateFinishedTrialError):
                self.set_trial_system_attr(trial_id, _BEAT_KEY, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.time()
            stale = []
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                beat = t.system_attrs.get(_BEAT_KEY)
                if beat is None:  # never beat: not ours to judge (as Optuna's RDB storage does)
                    continue
                # A retried trial inherits its dead original's attributes: its own start counts too.
                start = t.datetime_start.timestamp() if t.datetime_start else beat
                if now - max(beat, start) > self._grace_s:
                    stale.append(t._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self._beat_s

        def get_heartbeat_stale_trial_callback(self) -> Any:
            return self._callback

    return HeartbeatJournal
