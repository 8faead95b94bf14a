"""Speculation policies, drafters, match-length traces and the tuner.

Public surface: :class:`PolicyState`, :class:`Feedback`, :class:`Policy`, :data:`POLICIES`,
:func:`make_policy`, :func:`policy_from_dict`, :func:`load_policy_file`.
"""

from policies._adaptive import AdaptivePolicy
from policies._base import (
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
from policies._das import DASPolicy, das_optimal_k
from policies._diffuspec import DiffuSpecPolicy
from policies._drafters import DRAFTERS, Drafter, make_drafter, register_drafter
from policies._history import LONG, MEDIUM, SHORT, LengthHistory, length_class
from policies._match import compute_match_lengths
from policies._mdp import MDPPolicy, solve_mdp, threshold_structure
from policies._ngram import NgramDrafter
from policies._omni import OmniDrafter
from policies._oracle import OraclePolicy
from policies._pearl import PearlPolicy, pearl_window
from policies._prevrollout import PrevRolloutDrafter
from policies._seer import SeerPolicy
from policies._stand import StandDrafter, tree_conf, tree_match
from policies._state import (
    ACCEPT_EMA_WEIGHT,
    Feedback,
    PolicyState,
    per_token_acceptance,
    update_accept_ema,
)
from policies._suffix import SuffixDrafter
from policies._threshold import ThresholdPolicy
from policies._tlt import TLTPolicy
from policies._vllm import VllmExport, vllm_config

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
]
