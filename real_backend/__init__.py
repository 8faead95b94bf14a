"""The real backend: a lean Llama model on CPU or GPU running the same policies as the simulator.

Engine side (engine, workload, rollouts): :class:`Engine`, :func:`rollout`, :class:`RolloutConfig`,
:class:`RolloutResult`, :func:`load_backend`, :func:`arithmetic_prompts`, :func:`load_prompts_file`,
:func:`check_answer`, and the exact-arithmetic :class:`ToyLM` for tests.
"""

# --- engine side (engineer E) ---
from real_backend._engine import Engine, RolloutOutput, StepOutput
from real_backend._rollout import Backend, RolloutConfig, RolloutResult, load_backend, rollout
from real_backend._toy import ToyLM, ToyTokenizer
from real_backend._workload import (
    Prompt,
    RolloutRequest,
    arithmetic_prompts,
    check_answer,
    extract_final_number,
    load_prompts_file,
)

__all__ = [
    "Backend",
    "Engine",
    "Prompt",
    "RolloutConfig",
    "RolloutOutput",
    "RolloutRequest",
    "RolloutResult",
    "StepOutput",
    "ToyLM",
    "ToyTokenizer",
    "arithmetic_prompts",
    "check_answer",
    "extract_final_number",
    "load_backend",
    "load_prompts_file",
    "rollout",
]
