"""Discrete-event simulator of an RL rollout cluster under a speculation policy and a cost profile.

Public surface: :class:`SimConfig`, :func:`simulate`, :func:`simulate_policies`,
:class:`Simulator`, :class:`SimResult`, :func:`plan`, the acceptance sources (:data:`ACCEPTANCE`,
:func:`make_acceptance`, :class:`StepRollouts`, the adaptive drafter and the lossy methods) and
:func:`batch_size_over_time`.
See docs/simulator.md.
"""

from specroll.simulator._acceptance import (
    ACCEPTANCE,
    AcceptanceSource,
    ParametricAcceptance,
    StepAcceptance,
    StepRollouts,
    TraceAcceptance,
    make_acceptance,
)
from specroll.simulator._config import LossyConfig, PartialConfig, SimConfig
from specroll.simulator._drafter_training import AdaptiveDrafterAcceptance
from specroll.simulator._kernel import StepKernel
from specroll.simulator._lossy import METHODS as LOSSY_METHODS
from specroll.simulator._lossy import LossyAcceptance, LossyPositions
from specroll.simulator._plan import PlanRow, PlanSummary, fewest_engines, format_plan, plan, plan_summary
from specroll.simulator._plots import batch_size_over_time, plot_batch_size
from specroll.simulator._result import WALL_KEYS, SimResult
from specroll.simulator._simulate import Simulator, simulate, simulate_policies
from specroll.simulator._step import EngineSpec, StepOutcome
from specroll.simulator._tuning import (
    TuneOutcome,
    TuneSetup,
    TuneTable,
    load_tune_config,
    tune_family,
    tune_setup,
)
from specroll.simulator._workload import load_trace

__all__ = [
    "ACCEPTANCE",
    "AdaptiveDrafterAcceptance",
    "LOSSY_METHODS",
    "LossyAcceptance",
    "LossyConfig",
    "LossyPositions",
    "PartialConfig",
    "WALL_KEYS",
    "AcceptanceSource",
    "EngineSpec",
    "ParametricAcceptance",
    "SimConfig",
    "SimResult",
    "Simulator",
    "StepAcceptance",
    "StepKernel",
    "StepOutcome",
    "StepRollouts",
    "TraceAcceptance",
    "PlanRow",
    "PlanSummary",
    "plan_summary",
    "batch_size_over_time",
    "fewest_engines",
    "format_plan",
    "make_acceptance",
    "plan",
    "plot_batch_size",
    "simulate",
    "simulate_policies",
    "TuneOutcome",
    "TuneSetup",
    "TuneTable",
    "load_trace",
    "load_tune_config",
    "tune_family",
    "tune_setup",
]
