"""RL-shaped rollouts on the real backend: ``rollout(config) -> RolloutResult``.

Each RL step generates ``samples`` rollouts of every prompt with the engine under one policy and
drafter; finished rollouts then enter the drafter's history and the prompts' length history, so
later steps draft from earlier ones (docs/design.md "Why the problem exists"). An optional small
multiplicative weight perturbation per step stands in for the policy update between steps.
Outputs: the rollout trace (token ids included), per-iteration records, and a summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from specroll.core.config import ConfigModel
from specroll.core.errors import SpecrollError
from specroll.real_backend._engine import sample_kw
from specroll.real_backend._lossy import make_accept_rule
from specroll.real_backend._results import RolloutResult
from specroll.real_backend._summary import run_summary, step_summary
from specroll.real_backend._workload import (
    Prompt,
    arithmetic_prompts,
    check_answer,
    load_prompts_file,
    step_requests,
)

TOY_MODEL = "toy"
TOY_CTX = 4096  # the toy has no positional limit; a finite one exercises the cache check
# Rollouts need trained weights and a tokenizer: SmolLM2 ships both, a local Hugging Face checkpoint
# folder (--model PATH) brings its own (random-weight shapes of bigger models serve timing only, see
# make_timing_step); "toy" is the exact-arithmetic test model.
ROLLOUT_MODELS = ("smollm2-135m", TOY_MODEL)


class NoDrafter:
    """``--drafter none``: proposes nothing (kmax 0), so every policy decodes autoregressively;
    plain AR rollouts then pay no drafter bookkeeping at all."""

    name, kmax = "none", 0

    def start_step(self, step: int) -> None: ...
    def add_rollout(self, step: int, prompt_id: int, prompt_tokens: Any, response_tokens: Any) -> None: ...
    def begin(self, rid: int, prompt_id: int, prompt_tokens: Any) -> None: ...
    def extend(self, rid: int, tokens: Any) -> None: ...
    def end(self, rid: int) -> None: ...

    def propose(self, rid: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)


def check_model(name: str) -> None:
    from specroll.real_backend._hf import is_checkpoint

    if name not in ROLLOUT_MODELS and not is_checkpoint(name):
        raise SpecrollError(f"unknown model '{name}'", field="model",
                            fix=f"use one of {', '.join(ROLLOUT_MODELS)} or the path of a Hugging Face "
                                "checkpoint folder (config.json, *.safetensors, tokenizer.json); bigger "
                                "shapes are random-weight timing models: see `specroll calibrate`")


def model_label(name: str) -> str:
    """The model's name in traces and profiles (``hf:<folder>`` for a checkpoint folder)."""
    from specroll.real_backend._hf import checkpoint_name, is_checkpoint

    return checkpoint_name(name) if is_checkpoint(name) else name


class RolloutConfig(ConfigModel):
    """One real rollout run (`specroll rollout`'s flags, or a validate config's [workload])."""

    model: str = Field("smollm2-135m", description="smollm2-135m (trained weights), the path of a "
                       "Hugging Face checkpoint folder (Llama, Qwen2, Qwen3), or toy")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="cpu, cuda or cuda:N")
    policy: str = Field("ar", description="policy family")
    params: dict[str, Any] = Field(default_factory=dict, description="the policy's parameters")
    policy_file: str | None = Field(None, description="a best_policy.json; overrides policy/params")
    profile: str | None = Field(None, description="cost profile (file or built-in name) for the "
                                "policies that price decisions with one (mdp, pearl)")
    drafter: str = "suffix"
    drafter_params: dict[str, Any] = Field(default_factory=dict)
    prompts: int | None = Field(8, ge=1, le=1_000_000, description="arithmetic problems to generate; "
                                "with prompts_file, the first N of the file (None = all)")
    prompts_file: str | None = None
    samples: int = Field(4, ge=1, le=4096)
    steps: int = Field(3, ge=1, le=10_000)
    max_new_tokens: int = Field(256, ge=1, le=1 << 20)
    max_batch: int = Field(16, ge=1, le=4096)
    seed: int = 0
    temperature: float = Field(0.7, ge=0.0, le=100.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    perturb: float = Field(0.0, ge=0.0, le=1.0, description="relative weight noise per step")
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="None: bfloat16 on CUDA, float32 on CPU")
    length_window: int = Field(4, ge=1, description="steps of length history behind predicted lengths")
    graphs: bool | None = Field(None, description="CUDA-graph step pool (None: on CUDA only)")
    graph_replay: bool = Field(True, description="False: the pool's bucketed, padded steps run eagerly "
                               "(the reference that graph replay must reproduce bit for bit)")
    against_ar: bool = Field(False, description="also decode the workload autoregressively and report "
                             "token agreement (required exact on a CPU in float32)")
    accept: str = Field("exact", description="acceptance rule: exact (lossless), lenient, judge, ead")
    accept_params: dict[str, Any] = Field(default_factory=dict)

    def check(self) -> None:
        """What needs more than one field: the acceptance rule against the drafter."""
        from specroll.real_backend._model_drafter import MODEL_DRAFTERS
        rule = make_accept_rule(self.accept, **self.accept_params)
        if rule.draft_stop is not None and self.drafter not in MODEL_DRAFTERS:
            raise SpecrollError(f"accept rule '{self.accept}' needs a model drafter, got '{self.drafter}'",
                                field="drafter", fix=f"use --drafter {' or '.join(MODEL_DRAFTERS.names())}")


@dataclass
class Backend:
    """A loaded model with its tokenizer; reusable across rollouts of the same model and device
    (``perturb`` changes its weights in place)."""

    model: Any
    tokenizer: Any
    make_cache: Any
    """(n_slots, max_ctx) -> a fresh static KV cache."""
    ctx_limit: int
    dtype: str
    pools: dict[Any, Any] = field(default_factory=dict, repr=False)

    def graph_pool(self, n_slots: int, max_ctx: int, max_q: int, replay: bool = True) -> Any:
        """A cache of ``n_slots`` + 1 slots (the last: padding rows' scratch) and its CUDA-graph pool,
        reused across rollouts while large enough: captures cost more than the steps they serve."""
        from specroll.real_backend._graphs import GraphPool

        pool = self.pools.get((n_slots, replay))
        if pool is None or pool.cache.max_ctx < max_ctx or pool.max_q < max_q:
            if pool is not None:  # grow to serve both the old and the new workload
                max_ctx, max_q = max(max_ctx, pool.cache.max_ctx), max(max_q, pool.max_q)
            self.pools.clear()  # free the old cache and graphs first
            pool = GraphPool(self.model, self.make_cache(n_slots + 1, max_ctx), max_batch=n_slots,
                             max_q=max_q, use_graphs=None if replay else False)
            self.pools[(n_slots, replay)] = pool
        return pool


def load_backend(cfg: RolloutConfig) -> Backend:
    """Load ``cfg.model`` on ``cfg.device`` (clear errors for unknown models and missing files)."""
    import torch

    if cfg.model == TOY_MODEL:
        from specroll.real_backend._toy import ToyLM, ToyTokenizer
        model = ToyLM(seed=cfg.seed).to(cfg.device)
        return Backend(model, ToyTokenizer(), model.make_cache, TOY_CTX, "float32")
    check_model(cfg.model)
    from specroll.real_backend._load import load_model, load_tokenizer
    from specroll.real_backend._model import KVCache
    dtype = cfg.dtype or ("bfloat16" if cfg.device.startswith("cuda") else "float32")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise SpecrollError("CUDA is not available on this machine", field="device", fix="use --device cpu")
    model = load_model(cfg.model, device=cfg.device, dtype=dtype)
    tok = load_tokenizer(cfg.model)
    mcfg = model.cfg

    def make_cache(n_slots: int, max_ctx: int) -> Any:
        return KVCache(mcfg, n_slots, max_ctx, cfg.device, getattr(torch, dtype))

    return Backend(model, tok, make_cache, int(mcfg.max_ctx), dtype)


def _prompts(cfg: RolloutConfig) -> list[Prompt]:
    if cfg.prompts_file:
        prompts = load_prompts_file(cfg.prompts_file)
        return prompts if cfg.prompts is None else prompts[:cfg.prompts]
    return arithmetic_prompts(8 if cfg.prompts is None else cfg.prompts, cfg.seed)


def _policy(cfg: RolloutConfig) -> Any:
    from specroll.policies import load_policy_file, make_policy
    policy = load_policy_file(cfg.policy_file) if cfg.policy_file else make_policy(cfg.policy, **cfg.params)
    if policy.needs_cost:
        if cfg.profile is None:
            raise SpecrollError(f"policy '{policy.name}' prices its decisions with a cost profile of this "
                                "device", field="profile",
                                fix="pass --profile (a profile measured here by specroll calibrate, or a "
                                    "built-in name such as cpu:smollm2-135m)")
        from specroll.calibration import load_profile

        expect = None if cfg.model == TOY_MODEL else model_label(cfg.model)  # the toy has no shape
        policy.bind_cost(load_profile(cfg.profile, expect_model=expect))
    return policy


def perturb_weights(model: Any, eps: float, seed: int, step: int) -> None:
    """Multiply every floating weight by (1 + eps * N(0, 1)), noise drawn on the CPU from a generator
    keyed by (seed, step) and parameter order, so the perturbed model is the same on any device."""
    import torch

    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(model.named_parameters(), key=lambda kv: kv[0])):
            if not p.is_floating_point():
                continue
            g = torch.Generator().manual_seed((seed * 1_000_003 + step) * 7919 + i)
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            p.mul_((1.0 + eps * noise).to(device=p.device, dtype=p.dtype))


def rollout(cfg: RolloutConfig, *, on_tokens: Any = None, backend: Backend | None = None,
            drafter: Any = None, history: Any = None) -> RolloutResult:
    """Run ``cfg.steps`` RL steps of rollouts; see :class:`RolloutConfig`.

    ``backend`` reuses a loaded model (from :func:`load_backend` with the same model/device/dtype);
    ``drafter`` / ``history`` (a Drafter and a LengthHistory) replace the ones ``cfg`` names, e.g.
    to continue from earlier steps; ``on_tokens(n)`` is called as tokens are generated."""
    # Cheap checks first, so that a typo fails before the model loads.
    cfg.check()
    check_model(cfg.model)
    policy = _policy(cfg)
    prompts = _prompts(cfg)
    from specroll.real_backend._engine import Engine
    from specroll.real_backend._model_drafter import MODEL_DRAFTERS, make_model_drafter
    from specroll.traces import Trace, TraceMeta
    accept = make_accept_rule(cfg.accept, **cfg.accept_params)
    model_drafter = drafter is None and cfg.drafter in MODEL_DRAFTERS
    if drafter is None and cfg.drafter == NoDrafter.name:
        drafter = NoDrafter()
    elif drafter is None and not model_drafter:
        from specroll.policies import make_drafter
        drafter = make_drafter(cfg.drafter, **cfg.drafter_params)
    if history is None:
        from specroll.policies import LengthHistory
        history = LengthHistory(window=cfg.length_window)
    backend = backend or load_backend(cfg)
    model, tok, make_cache, ctx_limit, dtype = (backend.model, backend.tokenizer, backend.make_cache,
                                                backend.ctx_limit, backend.dtype)
    if model_drafter:  # drafts with the loaded model itself (e.g. its first layers)
        drafter = make_model_drafter(cfg.drafter, model, **cfg.drafter_params)
    kmax = int(drafter.kmax)
    from specroll.real_backend._engine import supports_trees
    width = int(getattr(drafter, "tree_width", 1)) if hasattr(drafter, "propose_tree") else 1
    if width > 1 and accept.is_lossy:
        raise SpecrollError(f"accept rule '{cfg.accept}' is lossy; tree drafters are verified exactly",
                            field="accept", fix="use --accept exact with a tree drafter")
    prompt_tokens = [list(tok.apply_chat_template(list(p.messages), add_generation_prompt=True))
                     for p in prompts]
    longest = max(len(t) for t in prompt_tokens)
    room = kmax * width  # a tree's nodes all take cache positions while verified
    max_ctx = longest + cfg.max_new_tokens + room + 1
    if max_ctx > ctx_limit:
        raise SpecrollError(f"longest prompt ({longest} tokens) + max-new-tokens ({cfg.max_new_tokens}) + "
                            f"draft room ({room + 1}) = {max_ctx} exceeds the model's context of {ctx_limit}",
                            field="max_new_tokens",
                            fix=f"pass --max-new-tokens <= {ctx_limit - longest - room - 1}")
    n_slots = min(cfg.max_batch, len(prompts) * cfg.samples)
    use_graphs = cfg.graphs if cfg.graphs is not None else cfg.device.startswith("cuda")
    forward = None
    if use_graphs and cfg.model != TOY_MODEL:
        forward = backend.graph_pool(n_slots, max_ctx, kmax + 1, replay=cfg.graph_replay)
        cache = forward.cache
    else:
        cache = make_cache(n_slots, max_ctx)
    engine = Engine(model, cache, forward=forward, max_batch=n_slots,
                    max_new_tokens=cfg.max_new_tokens, eos_ids=_eos_ids(model, tok), seed=cfg.seed,
                    temperature=cfg.temperature, top_p=cfg.top_p, accept=accept,
                    trees=supports_trees(model, cache))
    rows: dict[str, list[Any]] = {k: [] for k in ("step", "prompt_id", "sample", "prompt_len", "response_len",
                                                   "finished", "prompt_token_ids", "token_ids")}
    iterations: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    steps_summary = []
    texts = []
    for step in range(cfg.steps):
        if step > 0 and cfg.perturb > 0:
            perturb_weights(model, cfg.perturb, cfg.seed, step)
        drafter.start_step(step)
        reqs = step_requests(prompt_tokens, cfg.samples, step)
        predicted = history.predict(np.array([r.prompt_id for r in reqs], dtype=np.int64), step)
        out = engine.run_step(reqs, policy, drafter, step=step, predicted_len=predicted, on_tokens=on_tokens)
        correct = []
        for r in out.rollouts:
            req = r.request
            rows["step"].append(step)
            rows["prompt_id"].append(req.prompt_id)
            rows["sample"].append(req.sample)
            rows["prompt_len"].append(len(req.prompt_tokens))
            rows["response_len"].append(len(r.tokens))
            rows["finished"].append(r.finished)
            rows["prompt_token_ids"].append(np.asarray(req.prompt_tokens, dtype=np.int32))
            rows["token_ids"].append(np.asarray(r.tokens, dtype=np.int32))
            text = tok.decode(r.tokens)
            texts.append(text)
            correct.append(check_answer(text, prompts[req.prompt_id].answer))
            # History for the next steps: only after the step, as a synchronous RL step would.
            history.record(step, req.prompt_id, len(r.tokens), r.finished)
            drafter.add_rollout(step, req.prompt_id, np.asarray(req.prompt_tokens, dtype=np.int64),
                                np.asarray(r.tokens, dtype=np.int64), **sample_kw(drafter, req.sample))
        iterations.extend(out.iterations)
        decisions.extend(out.decisions)
        steps_summary.append(step_summary(step, out, correct))
    meta = TraceMeta(max_response_len=cfg.max_new_tokens, source=f"rollout:{cfg.model} seed={cfg.seed}",
                     model=model_label(cfg.model), temperature=float(cfg.temperature),
                     extra={"top_p": cfg.top_p, "samples": cfg.samples, "perturb": cfg.perturb,
                            "policy": policy.to_dict(),
                            "drafter": getattr(drafter, "name", cfg.drafter),
                            # A lossy rollout is not what the target alone produces: never validate
                            # it as lossless or replay it as the target's trace.
                            "lossy": accept.is_lossy, "accept": accept.to_dict(),
                            "engine_drafter": _drafter_meta(drafter, engine.tree_width(drafter))})
    trace = Trace.from_columns(meta, {k: np.asarray(v) if k not in ("prompt_token_ids", "token_ids") else v
                                      for k, v in rows.items()})
    summary = run_summary(cfg, policy, steps_summary, dtype, kmax)
    result = RolloutResult(trace, iterations, decisions, summary, texts)
    if cfg.against_ar:  # the same workload decoded autoregressively, and how far this run agrees
        from specroll.real_backend._agreement import against_ar
        summary.agreement = against_ar(cfg, result, backend, rollout)
    return result


def _drafter_meta(drafter: Any, tree_width: int) -> dict[str, Any]:
    """What drafted online: the drafter's own metadata, and the tree width actually verified."""
    meta = dict(drafter.to_meta()) if hasattr(drafter, "to_meta") else {"kind": getattr(drafter, "name", "")}
    meta["verified_tree_width"] = tree_width
    return meta


def _eos_ids(model: Any, tok: Any) -> list[int]:
    """The model config's end-of-sequence ids and the chat template's (they may differ)."""
    cfg = getattr(model, "cfg", None)
    return sorted({int(tok.eos_token_id), *(int(i) for i in getattr(cfg, "eos_ids", ()))})
