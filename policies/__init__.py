"""Speculation policies, drafters, match-length traces and the tuner.

Public surface: :class:`PolicyState`, :class:`Feedback`, :class:`Policy`, :data:`POLICIES`,
:func:`make_policy`, :func:`policy_from_dict`, :func:`load_policy_file`.
"""

from specroll.policies._adaptive import AdaptivePolicy
from specroll.policies._base import (
    POLICIES,
    AutoRegressive,
    FixedK,
    Policy,
    load_policy_file,
    make_policy,
    policy_from_dict,
    register_policy,
    save_policy_file,
)
from specroll.policies._das import DASPolicy, das_optimal_k
from specroll.policies._diffuspec import DiffuSpecPolicy
from specroll.policies._drafters import DRAFTERS, Drafter, make_drafter, register_drafter
from specroll.policies._history import LONG, MEDIUM, SHORT, LengthHistory, length_class
from specroll.policies._identity import digest as study_digest
from specroll.policies._match import compute_match_lengths
from specroll.policies._mdp import MDPPolicy, solve_mdp, threshold_structure
from specroll.policies._ngram import NgramDrafter
from specroll.policies._omni import OmniDrafter
from specroll.policies._oracle import OraclePolicy
from specroll.policies._pearl import PearlPolicy, pearl_window
from specroll.policies._prevrollout import PrevRolloutDrafter
from specroll.policies._seer import SeerPolicy
from specroll.policies._stand import StandDrafter, tree_conf, tree_match
from specroll.policies._state import (
    ACCEPT_EMA_WEIGHT,
    Feedback,
    PolicyState,
    per_token_acceptance,
    update_accept_ema,
)
from specroll.policies._suffix import SuffixDrafter
from specroll.policies._threshold import ThresholdPolicy
from specroll.policies._tlt import TLTPolicy
from specroll.policies._tuner import TuneResult, clipped_bounds, default_params, search_space, tunable, tune
from specroll.policies._vllm import VllmExport, vllm_config

__all__ = [
    "DRAFTERS",
    "Drafter",
    "NgramDrafter",
    "OmniDrafter",
    "PrevRolloutDrafter",
    "StandDrafter",
    "SuffixDrafter",
    "tree_conf",
    "tree_match",
    "compute_match_lengths",
    "make_drafter",
    "register_drafter",
    "POLICIES",
    "AdaptivePolicy",
    "AutoRegressive",
    "DASPolicy",
    "DiffuSpecPolicy",
    "Feedback",
    "FixedK",
    "LONG",
    "LengthHistory",
    "MEDIUM",
    "MDPPolicy",
    "OraclePolicy",
    "PearlPolicy",
    "Policy",
    "PolicyState",
    "per_token_acceptance",
    "update_accept_ema",
    "ACCEPT_EMA_WEIGHT",
    "SHORT",
    "SeerPolicy",
    "TLTPolicy",
    "ThresholdPolicy",
    "VllmExport",
    "das_optimal_k",
    "length_class",
    "load_policy_file",
    "make_policy",
    "pearl_window",
    "policy_from_dict",
    "register_policy",
    "save_policy_file",
    "solve_mdp",
    "threshold_structure",
    "vllm_config",
    "TuneResult",
    "clipped_bounds",
    "default_params",
    "search_space",
    "study_digest",
    "tunable",
    "tune",
]
