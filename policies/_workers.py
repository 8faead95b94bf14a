"""Running a study's trials in one or several worker processes, to exactly the number asked for.

Every worker (a process of ``--workers N`` on one machine, or the same command on another machine
pointing at the same storage) runs the same loop against the shared study:

- stop once the study holds ``n_trials`` COMPLETE trials;
- while COMPLETE + RUNNING trials already fill the ``n_trials`` slots, wait: a running trial may
  still fail (its worker died), and then the heartbeat marks it failed and re-queues its
  parameters (WAITING), which a waiting worker picks up;
- a trial that finds, once started, that trials numbered before it fill every slot (two workers
  asked at the same moment) is pruned as ``surplus`` before it measures anything.

So the study ends with exactly ``n_trials`` complete trials whatever dies in between. Pruned trials
(infeasible parameters, surpluses) and failed ones do not count.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

from specroll.core.errors import SpecrollError

POLL_S = 0.5
_INTERRUPTED = [False]


class _QuietWhenInterrupted(logging.Filter):
    """Optuna logs a trial ended by Ctrl-C as failed, with its traceback: after Ctrl-C, the CLI's
    one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_INTERRUPTED[0] or record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


logging.getLogger("optuna.study._optimize").addFilter(_QuietWhenInterrupted())


def worker_name() -> str:
    """``HOST:PID``: recorded in each trial's user attributes (who ran it, for the dashboard)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _fail_stale(study: Any) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class _Deferred:
    """Ctrl-C while a worker is inside Optuna's own bookkeeping (ask, tell, a storage write) could
    leave a trial half-told (Optuna then raises an UnboundLocalError instead): the interrupt is
    raised at once only while the objective measures, and otherwise at the next safe point."""

    def __init__(self) -> None:
        self.pending = False
        self.measuring = False

    def __call__(self, signum: int, frame: Any) -> None:
        _INTERRUPTED[0] = True
        if self.measuring:
            self.measuring = False
            raise KeyboardInterrupt
        self.pending = True

    def check(self) -> None:
        if self.pending:
            raise KeyboardInterrupt


def work(study: Any, objective: Callable[[Any], float], n_trials: int, *, max_pruned: int,
         on_trial: Callable[[int], None] | None = None) -> None:
    """Run trials of ``study`` until it holds ``n_trials`` complete ones (or ``max_pruned`` trials
    were pruned as infeasible since this call began: a space with few feasible points)."""
    import optuna
    from optuna.trial import TrialState as S

    me = worker_name()
    ctrl_c = _Deferred()

    def counted(states: tuple) -> list:
        return study.get_trials(deepcopy=False, states=states)

    def run(trial: Any) -> float:
        ctrl_c.check()  # inside the objective Optuna ends the trial cleanly (failed)
        trial.set_user_attr("worker", me)
        ahead = sum(t.number < trial.number for t in counted((S.COMPLETE, S.RUNNING)))
        if ahead >= n_trials:
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("surplus: the study's trials were all taken when this one began")
        ctrl_c.measuring = True
        try:
            ctrl_c.check()
            return objective(trial)
        finally:
            ctrl_c.measuring = False

    def infeasible() -> int:
        return sum(not t.user_attrs.get("surplus") for t in counted((S.PRUNED,)))

    _INTERRUPTED[0] = False
    previous = signal.signal(signal.SIGINT, ctrl_c)
    try:
        pruned0 = infeasible()
        while True:
            ctrl_c.check()
            trials = counted((S.COMPLETE, S.RUNNING, S.WAITING))
            complete = sum(t.state == S.COMPLETE for t in trials)
            if on_trial is not None:
                on_trial(complete)
            if complete >= n_trials or infeasible() - pruned0 >= max_pruned:
                return
            if len(trials) >= n_trials and not any(t.state == S.WAITING for t in trials):
                _fail_stale(study)  # a dead worker's trial: failed and re-queued once its beat is stale
                time.sleep(POLL_S)
                continue
            try:
                study.optimize(run, n_trials=1, catch=(FloatingPointError,), gc_after_trial=False)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # judged dead while alive (a long stall): its retry measures it again
    finally:
        signal.signal(signal.SIGINT, previous)


def run_workers(n_workers: int, main: Callable[[], None], child: Callable[[int], None]) -> None:
    """``main()`` here and ``child(i)`` in forked processes i = 1..n_workers-1; wait for them all.

    Fork, so that each worker inherits what the caller built (simulators, caches) instead of
    building it again. Ctrl-C reaches the children too (they end their trial as failed, quietly);
    the KeyboardInterrupt goes on to the caller.
    """
    if n_workers <= 1:
        main()
        return
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        raise SpecrollError("several workers need the 'fork' start method, which this platform lacks",
                            field="--workers", fix="run one worker per process: the same command several "
                                                   "times with one --storage and --study")
    ctx = multiprocessing.get_context("fork")
    sys.stdout.flush()
    sys.stderr.flush()
    procs = [ctx.Process(target=_child_main, args=(child, i), name=f"specroll-tune-{i}")
             for i in range(1, n_workers)]
    for p in procs:
        p.start()
    try:
        main()
    except BaseException:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGINT)
        raise
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
                p.join()


def _child_main(child: Callable[[int], None], i: int) -> None:
    code = 0
    try:
        child(i)
    except KeyboardInterrupt:
        code = 130
    except SpecrollError as exc:
        print(f"specroll: error: worker {i}: {exc.message}", file=sys.stderr)
        code = 2
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback from a worker
        print(f"specroll: error: worker {i}: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip the parent's exit handlers, which the fork copied
