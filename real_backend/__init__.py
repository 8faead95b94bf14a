"""The real backend: a lean Llama model on CPU or GPU running the same policies as the simulator.

Model side: :func:`load_model` (SmolLM2-135M from its GGUF, a local Hugging Face checkpoint folder of
the Llama/Qwen2/Qwen3 families, or random-weight timing shapes),
:class:`Transformer`, :class:`KVCache`, :class:`ModelConfig`, :func:`load_tokenizer`, :func:`model_file`,
:func:`keyed_sample` (position-keyed inverse-CDF sampling), :func:`make_timing_step` (calibration),
:class:`GraphPool` (CUDA-graph decode/verify steps; its cache needs max_batch + 1 slots).

Drafting and acceptance beyond exact chains: :data:`ACCEPT_RULES` / :func:`make_accept_rule` (exact,
lenient, judge, ead), :data:`MODEL_DRAFTERS` / :class:`LayerSkipDrafter` (self-speculation from the
model's first layers); tree drafters are verified as trees by the engine.

Engine side (engine, workload, rollouts): :class:`Engine`, :func:`rollout`, :class:`RolloutConfig`,
:class:`RolloutResult`, :func:`load_backend`, :func:`arithmetic_prompts`, :func:`load_prompts_file`,
:func:`check_answer`, and the exact-arithmetic :class:`ToyLM` for tests.
"""

# The model layer (_model, _load, _gguf, _hf, _tokenizer, _sampling, _graphs, _toy, _cpu_kernel) imports only
# specroll.core; the engine layer (the rest) builds on it and on the policies (tests/test_layers.py).
from specroll.real_backend._engine import Engine, RolloutOutput, StepOutput
from specroll.real_backend._gguf import model_file
from specroll.real_backend._graphs import GraphPool
from specroll.real_backend._load import load_model, load_tokenizer
from specroll.real_backend._lossy import ACCEPT_RULES, AcceptRule, make_accept_rule
from specroll.real_backend._model import KVCache, ModelConfig, Transformer
from specroll.real_backend._model_drafter import MODEL_DRAFTERS, LayerSkipDrafter, make_model_drafter
from specroll.real_backend._results import RolloutResult, RolloutStep, RolloutSummary
from specroll.real_backend._rollout import Backend, RolloutConfig, load_backend, model_label, rollout
from specroll.real_backend._sampling import keyed_sample
from specroll.real_backend._timing import TimingStep, make_timing_step
from specroll.real_backend._tokenizer import Tokenizer
from specroll.real_backend._toy import ToyLM, ToyTokenizer
from specroll.real_backend._workload import (
    Prompt,
    RolloutRequest,
    arithmetic_prompts,
    check_answer,
    extract_final_number,
    load_prompts_file,
)

__all__ = [
    # model layer
    "GraphPool",
    "KVCache",
    "ModelConfig",
    "TimingStep",
    "Tokenizer",
    "Transformer",
    "load_model",
    "load_tokenizer",
    "keyed_sample",
    "make_timing_step",
    "model_file",
    # engine layer
    "ACCEPT_RULES",
    "AcceptRule",
    "LayerSkipDrafter",
    "MODEL_DRAFTERS",
    "make_accept_rule",
    "make_model_drafter",
    "Backend",
    "Engine",
    "Prompt",
    "RolloutConfig",
    "RolloutOutput",
    "RolloutRequest",
    "RolloutResult",
    "RolloutStep",
    "RolloutSummary",
    "StepOutput",
    "ToyLM",
    "ToyTokenizer",
    "arithmetic_prompts",
    "check_answer",
    "extract_final_number",
    "load_backend",
    "load_prompts_file",
    "model_label",
    "rollout",
]
