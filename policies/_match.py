"""Match-length traces: replay a trace's rollouts through a drafter exactly as the real backend does.

For rollout y and position t, m_t = the length of the common prefix of the drafter's proposal
after seeing prompt + y[:t] and y[t:] (docs/design.md §1): drafting K tokens at t accepts min(K, m_t).
The replay makes the same calls as real_backend's engine and rollout loop, in the same order:

    for each step (ascending):  start_step(step)
        for each rollout of the step:  begin(rid, prompt_id, prompt)
            for t in 0 .. L-1:  propose(rid) -> m_t, conf row;  extend(rid, y[t:t+1])
            end(rid)
        for each rollout of the step:  add_rollout(step, prompt_id, prompt, y)

Online the engine extends by whole accepted runs and proposes only when a policy asks; because a
drafter's proposal depends on its content only (policies/_drafters.py), that gives the same
proposals, so these match lengths are what the engine's verification accepts.

Tree drafters (``tree_width`` > 1, ``propose_tree``; policies/_stand.py): m_t is the longest
prefix of y[t:] matched by any branch (branches share only the root, so at most one branch
matches at all), and the conf row is the tree's per-depth conditionals (``tree_conf``): what the
engine's policy sees online, whichever branch turns out to match. Drafters with ``uses_sample``
(``prevrollout``) get ``sample=`` in ``begin`` and ``add_rollout``, as from the engine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.policies._drafters import make_drafter
from specroll.policies._stand import tree_conf, tree_match


def compute_match_lengths(trace: Any, drafter_name: str, **params: Any) -> Any:
    """A new trace with ``match_<drafter_name>`` (int16, m_t per response position) and
    ``conf_<drafter_name>`` (float32, row-major (response_len, kmax): the proposal's per-token
    probabilities, 0 past its end) columns, and the drafter in ``meta.extra["drafters"]``.

    Needs the ``token_ids`` and ``prompt_token_ids`` columns. ``params`` go to the drafter.
    """
    from specroll.core.progress import progress

    source = getattr(trace.meta, "source", None) or None
    for col in ("token_ids", "prompt_token_ids"):
        if not trace.has(col):
            raise SpecrollError(f"the trace has no '{col}' column (match lengths replay the tokens)",
                                file=source, field=col,
                                fix="record the trace with the real backend (`specroll rollout`) or import "
                                    "it with `specroll trace import-jsonl --tokenize`")
    drafter = make_drafter(drafter_name, **params)
    kmax = drafter.kmax
    steps = trace.column("step").astype(np.int64)
    pids = trace.column("prompt_id").astype(np.int64)
    samples = trace.column("sample").astype(np.int64)
    tvals, toff = trace.ragged("token_ids")
    pvals, poff = trace.ragged("prompt_token_ids")
    tokens = np.asarray(tvals, dtype=np.int64)
    prompts = np.asarray(pvals, dtype=np.int64)
    lens = np.diff(toff)
    if not np.array_equal(lens, trace.column("response_len")):
        raise SpecrollError("token_ids lengths differ from response_len", file=source, field="token_ids",
                            fix="re-record or re-import the trace")
    if (np.diff(poff) == 0).any():
        raise SpecrollError("a rollout has an empty prompt_token_ids", file=source, field="prompt_token_ids",
                            fix="store every rollout's prompt tokens")
    match = np.zeros(int(toff[-1]), dtype=np.int16)
    conf = np.zeros((int(toff[-1]), kmax), dtype=np.float32)
    order = np.lexsort((samples, pids, steps))
    bounds = np.flatnonzero(np.diff(steps[order])) + 1
    bar = progress(total=len(trace), desc=f"match lengths ({drafter_name})", unit="rollout")
    try:
        for rows in np.split(order, bounds):
            step = int(steps[rows[0]])
            drafter.start_step(step)
            for row in rows.tolist():
                _replay(drafter, row, int(pids[row]), prompts[poff[row]:poff[row + 1]],
                        tokens[toff[row]:toff[row + 1]], match, conf, int(toff[row]),
                        **_sample_kw(drafter, samples[row]))
                bar.update(1)
            for row in rows.tolist():
                drafter.add_rollout(step, int(pids[row]), prompts[poff[row]:poff[row + 1]],
                                    tokens[toff[row]:toff[row + 1]], **_sample_kw(drafter, samples[row]))
    finally:
        bar.close()
    meta = drafter.to_meta()
    out = trace.with_ragged_column(f"match_{drafter_name}", match, toff, drafter_meta=meta)
    return out.with_ragged_column(f"conf_{drafter_name}", conf.reshape(-1), toff * kmax)


def _sample_kw(drafter: Any, sample: Any) -> dict[str, int]:
    return {"sample": int(sample)} if getattr(drafter, "uses_sample", False) else {}


def _replay(drafter: Any, rid: int, prompt_id: int, prompt: np.ndarray, y: np.ndarray, match: np.ndarray,
            conf: np.ndarray, base: int, **begin_kw: int) -> None:
    """One rollout: m_t and the conf row at every position t, written at ``base + t``."""
    ys = y.tolist()
    size = len(ys)
    drafter.begin(rid, prompt_id, prompt, **begin_kw)
    if getattr(drafter, "tree_width", 1) > 1:
        for t in range(size):
            branches = drafter.propose_tree(rid)
            if branches:
                c = tree_conf(branches)
                conf[base + t, :len(c)] = c
                match[base + t] = tree_match(branches, ys[t:])[0]
            drafter.extend(rid, y[t:t + 1])
        drafter.end(rid)
        return
    for t in range(size):
        toks, probs = drafter.propose(rid)
        n = len(toks)
        if n:
            conf[base + t, :n] = probs
            m = 0
            for a in toks.tolist():
                if t + m >= size or ys[t + m] != a:
                    break
                m += 1
            match[base + t] = m
        drafter.extend(rid, y[t:t + 1])
    drafter.end(rid)
