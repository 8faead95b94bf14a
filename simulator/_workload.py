"""The workload: a trace (file or synthetic preset) split into per-step rollouts, and dispatch.

Dispatch is decided once per RL step, before any engine runs (engines do not interact until
the barrier, which is what lets the kernel advance them together):
- ``round-robin``: rollout i of the step (trace order) goes to engine i mod E;
- ``least-loaded``: in trace order, each rollout goes to the engine with the least predicted
  work so far (predicted tokens from the prompt's history; the step's mean where unknown);
- ``longest-predicted-first`` (Seer-style): rollouts sorted by predicted length, longest first,
  each to the least-loaded engine (LPT), and each engine admits its longest ones first;
- ``histopipe`` (RhymeRL's HistoPipe): rollouts ranked by their prompt's history length, dealt to
  the engines in a serpentine (0 .. E-1, E-1 .. 0, ...) so every engine gets the same mix of ranks,
  each engine admitting its longest first; the serpentine starts from the other end every other
  step (engine E-1 gets rank 0), so the slight excess of the engines at the head of each lap moves
  from one end of the cluster to the other from step to step;
- ``long-dedicated`` (StreamRL's skewness-aware dispatch): the ``long_frac`` longest-predicted
  rollouts go (LPT) to ``long_engines`` engines reserved for the tail, the rest (LPT) to the others.
"""

from __future__ import annotations

import heapq

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.simulator._acceptance import StepRollouts
from specroll.simulator._config import SimConfig


def load_trace(config: SimConfig):
    """The config's trace: read from its file or synthesized from its preset."""
    from specroll import traces
    w = config.workload
    if w.trace is not None:
        tr = traces.read_trace(config.trace_path())
    else:
        seed = config.seed if w.seed is None else w.seed
        try:
            tr = traces.synthesize(w.preset, prompts=w.prompts, samples=w.samples, steps=w.steps, seed=seed)
        except SpecrollError as exc:
            raise SpecrollError(exc.what, file=config.file, field="workload.preset", fix=exc.fix) from None
    return tr


def split_steps(tr, config: SimConfig) -> list[StepRollouts]:
    """Per-step rollouts in (prompt_id, sample) order, with any match/conf columns the trace has."""
    tr = tr.sort()
    steps = np.unique(tr.column("step"))
    w = config.workload
    if w.trace is not None and w.steps is not None:
        steps = steps[: w.steps]
    drafters = tr.meta.extra.get("drafters", {})
    kmax = {name: int(spec.get("kmax", 8)) for name, spec in drafters.items()}
    width = {name: int(spec.get("tree_width", 1)) for name, spec in drafters.items()}
    step_col = tr.column("step")
    bounds = np.searchsorted(step_col, np.concatenate([steps, [np.iinfo(np.int64).max]]))
    out = []
    for i, s in enumerate(steps.tolist()):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        ro = StepRollouts(
            step=int(s),
            prompt_id=tr.column("prompt_id")[lo:hi].astype(np.int64),
            sample=tr.column("sample")[lo:hi].astype(np.int64),
            prompt_len=tr.column("prompt_len")[lo:hi].astype(np.int64),
            response_len=tr.column("response_len")[lo:hi].astype(np.int64),
            finished=tr.column("finished")[lo:hi].astype(bool),
            kmax=dict(kmax),
            tree_width=dict(width),
        )
        for prefix, target in (("match_", ro.match), ("conf_", ro.conf)):
            for col in tr.columns:
                if col.startswith(prefix):
                    values, offsets = tr.ragged(col)
                    target[col[len(prefix):]] = (values[offsets[lo]:offsets[hi]],
                                                 offsets[lo:hi + 1] - offsets[lo])
        out.append(ro)
    for prev, ro in zip(out, out[1:]):
        ro.prev_len = _previous_lengths(prev, ro)
    if not out:
        raise SpecrollError("the trace has no rollouts", file=config.file, field="workload",
                            fix="use a non-empty trace")
    return out


def _previous_lengths(prev: StepRollouts, ro: StepRollouts) -> np.ndarray:
    """Response length of ``prev``'s rollout with the same (prompt_id, sample) as each of ``ro``'s
    (0 where ``prev`` has none); both are sorted by (prompt_id, sample)."""
    if prev.n == 0 or ro.n == 0:
        return np.zeros(ro.n, np.int64)
    ids = np.concatenate([prev.prompt_id, ro.prompt_id])
    samples = np.concatenate([prev.sample, ro.sample])
    if ids.min() >= 0 and ids.max() < (1 << 40) and samples.min() >= 0 and samples.max() < (1 << 20):
        key_prev = prev.prompt_id * (1 << 20) + prev.sample
        key = ro.prompt_id * (1 << 20) + ro.sample
        at = np.minimum(np.searchsorted(key_prev, key), prev.n - 1)
        return np.where(key_prev[at] == key, prev.response_len[at], 0).astype(np.int64)
    lens = {(int(p), int(q)): int(L) for p, q, L in zip(prev.prompt_id, prev.sample, prev.response_len)}
    return np.array([lens.get((int(p), int(q)), 0) for p, q in zip(ro.prompt_id, ro.sample)], np.int64)


def dispatch(predicted: np.ndarray, n_engines: int, kind: str, *, step: int = 0,
             long_engines: int | None = None, long_frac: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(engine of each rollout, rollouts grouped by engine in admission order)."""
    R = predicted.shape[0]
    if kind == "round-robin":
        engine = np.arange(R, dtype=np.int64) % n_engines
        return engine, np.argsort(engine, kind="stable")
    known = np.isfinite(predicted)
    fill = float(predicted[known].mean()) if known.any() else 1.0
    work = np.where(known, predicted, fill)
    if kind == "histopipe":
        order = np.argsort(-work, kind="stable")  # rank 0 = longest predicted
        lap, at = np.divmod(np.arange(R, dtype=np.int64), n_engines)
        forward = (lap + step) % 2 == 0
        engine = np.empty(R, dtype=np.int64)
        engine[order] = np.where(forward, at, n_engines - 1 - at)
        return engine, _queues(engine, order)
    if kind == "long-dedicated" and n_engines > 1:
        n_long = long_engines or max(1, n_engines // 8)
        order = np.argsort(-work, kind="stable")
        tail = order[:int(round(long_frac * R))]
        rest = order[int(round(long_frac * R)):]
        engine = np.empty(R, dtype=np.int64)
        engine[tail] = _lpt(work, tail, n_long)
        engine[rest] = n_long + _lpt(work, rest, n_engines - n_long)
        return engine, _queues(engine, order)
    order = np.arange(R) if kind == "least-loaded" else np.argsort(-work, kind="stable")
    engine = np.empty(R, dtype=np.int64)
    engine[order] = _lpt(work, order, n_engines)
    return engine, _queues(engine, order)


def _lpt(work: np.ndarray, order: np.ndarray, n_engines: int) -> np.ndarray:
    """Engines (0 .. n_engines-1) for rollouts ``order``, each to the least-loaded so far (greedy)."""
    out = np.empty(order.shape[0], dtype=np.int64)
    heap = [(0.0, e) for e in range(n_engines)]
    for i, w in enumerate(work[order].tolist()):
        load, e = heapq.heappop(heap)
        out[i] = e
        heapq.heappush(heap, (load + w, e))
    return out


def _queues(engine: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rollouts grouped by engine, each engine's in ``order`` (trace order, or longest first)."""
    rank = np.empty(order.shape[0], dtype=np.int64)
    rank[order] = np.arange(order.shape[0])
    return np.lexsort((rank, engine))
