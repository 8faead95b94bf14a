"""Drafter interface and registry (docs/architecture.md "Drafter interface", docs/drafters.md).

A drafter proposes draft tokens from text seen before. The engine (real backend) and the offline
replay (:func:`policies.compute_match_lengths`) drive it with the same calls:

- ``start_step(step)`` before an RL step; ``add_rollout(...)`` for every finished rollout of a
  step, after the step;
- per request: ``begin`` (prompt), ``extend`` (accepted tokens, one or several at a time),
  ``propose`` (any number of times between extends), ``end``.

Contract: deterministic. A proposal is a function of the drafter's *content* only (the history
visible at this step and the request's own prompt and output so far), never of the order the
history was inserted in, of how ``extend`` calls were chunked, or of timing. That is what makes
offline match lengths equal what the real backend sees online.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.core.params import build_params, check_number
from specroll.core.registry import Registry

DRAFTERS: Registry[type[Drafter]] = Registry("drafter")


def register_drafter(name: str):
    """Class decorator: register a Drafter subclass under ``name`` (sets ``cls.name``)."""
    return DRAFTERS.named(name)


class Drafter:
    """Base class: parameters as a nested dataclass ``Params`` (with a ``kmax`` field), the
    request calls abstract. History-free drafters inherit the no-op ``start_step`` /
    ``add_rollout``."""

    name: ClassVar[str] = "base"

    @dataclasses.dataclass
    class Params:
        kmax: int = 8

    def __init__(self, **params: Any) -> None:
        self.params = build_params(self.Params, params, owner=f"drafter '{self.name}'",
                                   field="drafter_params")
        check_number(self.params.kmax, "kmax", integer=True, lo=1,
                     fix="pass kmax=8 (the longest proposal, in tokens)")
        self.kmax = int(self.params.kmax)
        self._req: dict[int, Any] = {}  # per-request state of the drafters that keep one
        self.validate()

    def validate(self) -> None:
        """Check parameter values; raise SpecrollError naming the parameter."""

    # ---- history (earlier RL steps) ------------------------------------------------------------
    def start_step(self, step: int) -> None:
        """A new RL step begins: history older than the drafter's window is dropped."""

    def add_rollout(self, step: int, prompt_id: int, prompt_tokens: Any, response_tokens: Any) -> None:
        """A finished rollout of ``step`` (called after the step for every rollout)."""

    # ---- requests ------------------------------------------------------------------------------
    # Drafters that keep per-request state hold it in ``self._req``: ``begin`` checks the id with
    # ``_new``, stores the state, and the calls after it reach it through ``_get`` / ``_pop``.
    def _new(self, rid: int) -> int:
        """``rid`` as an int; one clear error if that request already began."""
        rid = int(rid)
        if rid in self._req:
            raise SpecrollError(f"request {rid} already began", field="rid", fix="end() it first")
        return rid

    def _get(self, rid: int) -> Any:
        """The state ``begin`` stored in ``self._req`` for request ``rid``; one clear error if none."""
        try:
            return self._req[int(rid)]
        except KeyError:
            raise SpecrollError(f"unknown request {rid}", field="rid", fix="call begin() first") from None

    def _pop(self, rid: int) -> Any:
        """Remove and return request ``rid``'s state; one clear error if none."""
        state = self._get(rid)
        del self._req[int(rid)]
        return state

    def begin(self, rid: int, prompt_id: int, prompt_tokens: Any) -> None:
        raise NotImplementedError

    def extend(self, rid: int, tokens: Any) -> None:
        """``tokens`` were appended to request ``rid``'s output."""
        raise NotImplementedError

    def propose(self, rid: int) -> tuple[np.ndarray, np.ndarray]:
        """(token ids int64 (L,), probs float32 (L,)), L <= kmax; ``probs[j]`` is the drafter's
        probability of token j given the context and the proposal's tokens before j (> 0).
        The arrays may be shared: callers must not write into them."""
        raise NotImplementedError

    def end(self, rid: int) -> None:
        """Request ``rid`` finished: its state is dropped."""
        self._pop(rid)

    # ---- description ---------------------------------------------------------------------------
    def to_meta(self) -> dict[str, Any]:
        """The trace metadata entry ``extra.drafters[name]``: ``{"kind", "params", "kmax"}``."""
        return {"kind": self.name, "params": dataclasses.asdict(self.params), "kmax": self.kmax}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self.params).items())
        return f"{self.name}({args})"


def make_drafter(name: str, **params: Any) -> Drafter:
    """Build a registered drafter (``suffix``, ``ngram``) by name with keyword parameters."""
    return DRAFTERS.get(name, field="drafter")(**params)


def as_token_list(tokens: Any, what: str = "tokens") -> list[int]:
    """Token ids as a list of Python ints (from a numpy array, list or tuple); negative ids are
    rejected (the suffix drafter uses them as sequence separators)."""
    if isinstance(tokens, np.ndarray):
        if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
            raise SpecrollError(f"{what} must be a 1-D integer array, got {tokens.dtype} {tokens.shape}",
                                field=what, fix="pass token ids as int64")
        out = tokens.tolist()
    else:
        out = [int(t) for t in tokens]
    if out and min(out) < 0:
        raise SpecrollError(f"{what} has negative token ids", field=what, fix="pass token ids >= 0")
    return out
