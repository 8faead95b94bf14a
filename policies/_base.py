"""Policy base class, the policy registry, and the two simplest families (ar, fixed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import ConfigDict, Field

from specroll.core.config import ConfigModel, parse
from specroll.core.errors import SpecrollError
from specroll.core.fileio import read_json, write_json
from specroll.core.params import build_params
from specroll.core.registry import Registry
from specroll.policies._state import Feedback, PolicyState

POLICIES: Registry[type[Policy]] = Registry("policy")


def register_policy(name: str):
    """Class decorator: register a Policy subclass under ``name`` (sets ``cls.name``)."""
    return POLICIES.named(name)


class Policy:
    """Decides a draft length per active request each iteration.

    Subclasses declare their parameters as a nested dataclass ``Params`` (defaults = the source
    paper's), implement :meth:`decide`, and if stateful :meth:`reset` / :meth:`observe`.
    The same object runs unchanged in the simulator and the real backend.

    Optional fast-path contract: a policy may define ``decide_with_horizon(state) -> (k,
    horizon, floor)`` returning decide(state); per request, the ``generated`` value from which its
    decision may change (int array, or None for never); and per engine a batch floor (int array,
    or None for "never depends on the batch size"). Defining it promises that the decision of an
    engine's requests depends only on that engine's requests' ``generated``, ``predicted_len``,
    ``prompt_len``, ``request`` and its ``batch_size`` (plus the scalars); that it stays the same
    while every ``generated < horizon`` and the engine's requests are the same, or fewer with a
    batch size still >= floor (a policy that depends on which requests remain returns the batch
    size itself); and that observe() does nothing. The simulator then advances engines many
    iterations per decision.
    """

    name: ClassVar[str] = "base"
    deployable: ClassVar[bool] = True
    uses_confidence: ClassVar[bool] = False
    needs_cost: ClassVar[bool] = False
    """True for families that price their decisions with the run's cost profile (mdp, pearl): the
    simulator and the real backend hand it over with :meth:`bind_cost` before the first decision."""

    @dataclasses.dataclass
    class Params:
        pass

    def __init__(self, **params: Any) -> None:
        self.params = build_params(self.Params, params, owner=f"policy '{self.name}'", field="params")
        self.validate()

    def validate(self) -> None:
        """Check parameter values; raise SpecrollError naming the parameter."""

    def bind_cost(self, profile: Any) -> None:
        """Price decisions with ``profile`` (a calibration.CostProfile: ``iteration_time`` and
        ``with_drafter``), the cost profile of the run this policy is about to drive. A policy never
        loads a profile by name: the same best_policy.json then prices with the profile of wherever
        it runs (an H100 what-if in simulation, the measured CPU profile in a CPU rollout)."""

    def reset(self, n_engines: int) -> None:
        """Forget per-step state; called at the start of every RL step."""

    def decide(self, state: PolicyState) -> np.ndarray:
        raise NotImplementedError

    def observe(self, state: PolicyState, feedback: Feedback) -> None:
        """Learn from the iteration just run (bandits, feedback controllers)."""

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.name, "params": dataclasses.asdict(self.params)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self.params).items())
        return f"{self.name}({args})"


def make_policy(name: str, **params: Any) -> Policy:
    """Build a registered policy by name with keyword parameters."""
    return POLICIES.get(name)(**params)


class PolicyFile(ConfigModel):
    """A policy file (best_policy.json): the family, its parameters, and what the tuner recorded
    about where they came from (free-form: ``objective_s``, the study's identity ...)."""

    model_config = ConfigDict(extra="allow", strict=True)
    policy: str = Field(description="policy family (specroll simulate --help lists them)")
    params: dict[str, Any] = Field(default_factory=dict)


def policy_from_dict(spec: dict[str, Any], *, file: str | Path | None = None) -> Policy:
    """Build a policy from ``{"policy": NAME, "params": {...}}`` (the tuner's best_policy.json)."""
    where = None if file is None else str(file)
    if isinstance(spec, dict) and "speculative_config" in spec:
        raise SpecrollError("this is a vLLM export (specroll export-vllm), not a policy file", file=where,
                            fix="pass the best_policy.json it was exported from")
    pf = parse(PolicyFile, spec, file=where)
    try:
        return POLICIES.get(pf.policy, file=where, field="policy")(**pf.params)
    except SpecrollError as exc:
        raise SpecrollError(exc.what, file=exc.file or where, field=exc.field, fix=exc.fix) from None


def load_policy_file(path: str | Path) -> Policy:
    return policy_from_dict(read_json(path), file=path)


def save_policy_file(policy: Policy, path: str | Path, **extra: Any) -> Path:
    return write_json(path, {**policy.to_dict(), **extra})


@register_policy("ar")
class AutoRegressive(Policy):
    """No speculation: every request decodes one token per iteration."""

    def decide(self, state: PolicyState) -> np.ndarray:
        return np.zeros(state.n, dtype=np.int32)

    def decide_with_horizon(self, state: PolicyState) -> tuple[np.ndarray, None, None]:
        return self.decide(state), None, None


@register_policy("fixed")
class FixedK(Policy):
    """A constant draft length ``k`` for every request, clipped to the drafter's kmax."""

    @dataclasses.dataclass
    class Params:
        k: int = 4

    def validate(self) -> None:
        if int(self.params.k) < 0:
            raise SpecrollError(f"k must be >= 0, got {self.params.k}", field="k")

    def decide(self, state: PolicyState) -> np.ndarray:
        return np.full(state.n, min(int(self.params.k), state.kmax), dtype=np.int32)

    def decide_with_horizon(self, state: PolicyState) -> tuple[np.ndarray, None, None]:
        return self.decide(state), None, None
