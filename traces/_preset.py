"""A synthetic trace preset: the parameters of the generative model in traces/_synth.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SynthPreset:
    """Parameters of one synthetic workload; the model is in traces/_synth.py."""

    name: str
    description: str
    max_response_len: int
    samples: int  # rollouts per prompt per step (GRPO group size)
    prompts: int = 512  # defaults for `specroll trace synth` when not given
    steps: int = 8
    temperature: float = 1.0
    mode_weights: tuple[float, ...] = (1.0,)
    mode_medians: tuple[float, ...] = (1000.0,)  # tokens, at step 0
    sigma_prompt: float = 0.6
    sigma_within: float = 0.45
    runaway_rate: float = 0.01
    runaway_hard: float = 0.8
    persistence: float = 0.97
    mover_rate: float = 0.03
    drift_per_step: float = 0.005
    prompt_len_median: float = 150.0
    prompt_len_sigma: float = 0.5
    #: What published statistics this preset targets (and which it could not find).
    targets: str = ""
    #: Optional empirical marginal: sorted lengths whose quantiles replace the parametric
    #: log-normal (Gaussian copula), used by presets built from measured distributions.
    quantile_table: tuple[int, ...] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("quantile_table")
        d.pop("description")
        d.pop("targets")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}  # as JSON reads back
