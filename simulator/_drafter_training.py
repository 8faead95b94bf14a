"""TLT's adaptive drafter: acceptance that improves as the drafter trains on idle engines.

TLT (Hu et al., "Taming the Long-Tail", arXiv 2511.16665) trains a small draft model on the GPUs
that go idle in the tail of each rollout phase (its spot trainer) and uses it for speculative
decoding in later steps; every policy update moves the target away from what the drafter learned.
Here the drafter's per-token acceptance follows a learning curve in the tokens it has trained on:

    alpha(T) = alpha_max - (alpha_max - alpha0) * exp(-T / tokens_scale)

T starts at ``warm_tokens``; after each step T += idle engine-seconds x ``train_tokens_per_s``
(the idle time the SimPy cluster gives to drafter training: every engine that finished its rollouts
trains until the step's barrier), then the weight update keeps a fraction 1 - ``drop`` of it (the
drafter is partly stale under the new weights). Step s draws its match lengths from the parametric
model with alpha = alpha(T_s) (``alpha_end`` scaled by the same factor for ``model = "decay"``), keyed
as usual, so a step's acceptance depends on the previous steps' idle time under the same policy.

The state lives in the source and is reset by :meth:`start_run` at the start of each
``Simulator.run``: the Simulator does not cache this source's steps across runs (``per_run``).
The curve's constants are assumptions to be replaced by a measured curve (docs/systems/engines.md).
"""

from __future__ import annotations

import math
from typing import Any

from specroll.core.config import check_kwargs
from specroll.core.errors import SpecrollError
from specroll.simulator._acceptance import (
    ACCEPTANCE,
    AcceptanceSource,
    ParametricAcceptance,
    StepAcceptance,
    StepRollouts,
)


@ACCEPTANCE.register("adaptive-drafter")
class AdaptiveDrafterAcceptance(AcceptanceSource):
    """Parametric acceptance whose alpha follows the drafter's training (see the module docstring)."""

    name = "adaptive-drafter"
    per_run = True

    def __init__(self, alpha0: float = 0.5, alpha_max: float = 0.8, tokens_scale: float = 2e8,
                 train_tokens_per_s: float = 5e4, drop: float = 0.3, warm_tokens: float = 0.0,
                 **parametric: Any) -> None:
        if "alpha" in parametric:
            raise SpecrollError("the adaptive drafter's alpha follows its learning curve",
                                field="acceptance.alpha",
                                fix="set alpha0 (untrained) and alpha_max (fully trained) instead")
        for name, v, ok in (("alpha0", alpha0, 0.0 < alpha0 < 1.0),
                            ("alpha_max", alpha_max, 0.0 < alpha_max < 1.0),
                            ("tokens_scale", tokens_scale, tokens_scale > 0),
                            ("train_tokens_per_s", train_tokens_per_s, train_tokens_per_s >= 0),
                            ("drop", drop, 0.0 <= drop <= 1.0),
                            ("warm_tokens", warm_tokens, warm_tokens >= 0)):
            if not ok:
                raise SpecrollError(f"bad value {v!r}", field=f"acceptance.{name}",
                                    fix="alpha0, alpha_max in (0, 1); drop in [0, 1]; scales >= 0")
        self.alpha0, self.alpha_max = float(alpha0), float(alpha_max)
        self.tokens_scale, self.train_tokens_per_s = float(tokens_scale), float(train_tokens_per_s)
        self.drop, self.warm_tokens = float(drop), float(warm_tokens)
        self.parametric = check_kwargs(ParametricAcceptance, parametric, prefix="acceptance")
        self._check = ParametricAcceptance(alpha=self.alpha_max, **self.parametric)  # validates the rest
        self.kmax = self._check.kmax
        self.start_run()

    def start_run(self) -> None:
        self.tokens = self.warm_tokens
        self.history: list[dict[str, float]] = []

    def alpha(self, tokens: float | None = None) -> float:
        t = self.tokens if tokens is None else tokens
        return self.alpha_max - (self.alpha_max - self.alpha0) * math.exp(-t / self.tokens_scale)

    def prepare(self, rollouts: StepRollouts, seed: int) -> StepAcceptance:
        a = self.alpha()
        params = dict(self.parametric)
        if "alpha_end" in params:
            params["alpha_end"] = min(float(params["alpha_end"]) * a / self.alpha_max, 1.0)
        return ParametricAcceptance(alpha=a, **params).prepare(rollouts, seed)

    def end_step(self, idle_engine_s: float) -> dict[str, float]:
        """Train on the step's idle engine-seconds, then lose ``drop`` of it at the weight update.
        Returns what the step record shows."""
        alpha = self.alpha()
        trained = max(idle_engine_s, 0.0) * self.train_tokens_per_s
        self.tokens = (self.tokens + trained) * (1.0 - self.drop)
        rec = {"drafter_alpha": alpha, "drafter_train_tokens": trained}
        self.history.append(rec)
        return rec
