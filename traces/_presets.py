"""The named synthetic presets.

Sources of the targets (what could be found; a figure not listed was not found and the
preset's value for it is a stated design choice, not a citation):

- [DAS] Shao et al., "Beat the long tail: Distribution-Aware Speculative Decoding for RL
  Training", arXiv 2511.13841 (MLSys'26): rollout > 70 % of RL training time; a small fraction of
  long generations dominates step time; stable prompt-level patterns across epochs. No length
  quantiles found in the text we could retrieve.
- [Seer] Pang et al., "Seer: Online Context Learning for Fast Synchronous LLM RL", arXiv
  2511.14617: 8 or 16 responses per prompt; generation caps of 40,960 / 65,536 / 98,304 tokens;
  the last 10 % of requests to finish take up to 50 % of rollout time; requests sharing a prompt
  have strongly similar output lengths (no correlation coefficient given in what we found).
- [RhymeRL] He et al., "History Rhymes: Accelerating LLM RL with RhymeRL", arXiv 2508.18588:
  rollouts of a prompt are similar across adjacent epochs (length distribution used for
  scheduling); no numeric rank-stability figure found.
- [RollPacker] Gao et al., "RollPacker: Mitigating Long-Tail Rollouts for Fast, Synchronous RL
  Post-Training", arXiv 2509.21009 (NSDI'26): rollout ~ 70 % of training time, highly skewed
  long-tail response lengths caused by a small fraction of prompts. No quantiles found.
- [TLT] Hu et al., "Taming the Long-Tail: Efficient Reasoning RL Training with Adaptive
  Drafter", arXiv 2511.16665 (ASPLOS'26): ByteDance 32B production trace, maximum lengths far
  above the 75th percentile, persistent through training; a few very long responses take most of
  the step time.
- [Lesson] jiahuanglin.xyz RL lesson 22b (secondary source, not a paper): a typical reasoning-RL
  run has median ~ 500 and p99 ~ 5000 tokens (p99/p50 ~ 10); ~5 % of rollouts carry ~30-50 % of
  decode tokens.

Clip ratios (mass at the cap) were not found as numbers in these sources; the presets put
~2 % of rollouts at the cap, enough to matter for the makespan. The measured figures of each
preset are in traces/README.md (``specroll trace stats``).
"""

from __future__ import annotations

from specroll.traces._synth import PRESETS, SynthPreset

MATH_16K = SynthPreset(
    name="math-16k",
    description="GRPO on math word problems: 16k cap, 16 samples per prompt, bimodal (direct answers "
                "vs long chains of thought).",
    max_response_len=16384, samples=16, prompts=512, steps=8, temperature=1.0,
    mode_weights=(0.6, 0.4), mode_medians=(800.0, 2800.0), sigma_prompt=0.6, sigma_within=0.5,
    runaway_rate=0.02, runaway_hard=0.8, persistence=0.97, mover_rate=0.05, drift_per_step=0.005,
    prompt_len_median=120.0, prompt_len_sigma=0.5,
    targets="p99/p50 ~ 10 [Lesson]; longest 5 % of rollouts ~30 % of tokens, longest 10 % ~40-50 % "
            "[Lesson, Seer]; 16 samples per prompt [Seer]; strong within-group similarity [Seer] "
            "(ICC of log length ~0.65, a choice); stable ranks across epochs with few movers "
            "[RhymeRL, DAS] (~4 % move > a quartile per step, a choice); slow growth of length over "
            "training (+0.5 %/step, a choice); ~2 % at the cap (a choice).",
)

CODE_8K = SynthPreset(
    name="code-8k",
    description="RL on code generation: 8k cap, 8 samples per prompt, shorter and more variable within "
                "a group than math.",
    max_response_len=8192, samples=8, prompts=1024, steps=8, temperature=1.0,
    mode_weights=(0.5, 0.5), mode_medians=(350.0, 1200.0), sigma_prompt=0.6, sigma_within=0.55,
    runaway_rate=0.02, runaway_hard=0.7, persistence=0.97, mover_rate=0.05, drift_per_step=0.005,
    prompt_len_median=300.0, prompt_len_sigma=0.6,
    targets="8 samples per prompt [Seer]; p99/p50 ~ 10 [Lesson]; top 10 % of rollouts ~40 % of tokens "
            "[Lesson, Seer]; code reasoning RL workloads [DAS]; ICC ~0.6, ~2 % at the cap, ~5-7 % rank "
            "movers per step are choices.",
)

REASONING_32K = SynthPreset(
    name="reasoning-32k",
    description="Long chain-of-thought reasoning RL: 32k cap, 16 samples, most prompts in the long "
                "mode, faster length growth over training.",
    max_response_len=32768, samples=16, prompts=512, steps=8, temperature=1.0,
    mode_weights=(0.35, 0.65), mode_medians=(1500.0, 5000.0), sigma_prompt=0.6, sigma_within=0.5,
    runaway_rate=0.025, runaway_hard=0.8, persistence=0.97, mover_rate=0.05, drift_per_step=0.01,
    prompt_len_median=150.0, prompt_len_sigma=0.5,
    targets="caps of tens of thousands of tokens [Seer: 40,960-98,304]; max far above p75 [TLT]; "
            "p99/p50 ~ 9-10 [Lesson]; tail 10 % of rollouts ~40 % of tokens [Seer: last 10 % of "
            "requests up to 50 % of rollout time]; length growth +1 %/step and ~2.5 % at the cap are "
            "choices.",
)

TINY = SynthPreset(
    name="tiny",
    description="A small, fast preset for tests and examples: 512 cap, 4 samples per prompt.",
    max_response_len=512, samples=4, prompts=32, steps=4, temperature=1.0,
    mode_weights=(0.6, 0.4), mode_medians=(40.0, 120.0), sigma_prompt=0.6, sigma_within=0.5,
    runaway_rate=0.02, runaway_hard=0.8, persistence=0.97, mover_rate=0.05, drift_per_step=0.005,
    prompt_len_median=30.0, prompt_len_sigma=0.4,
    targets="same shape as math-16k, scaled down: p99/p50 ~ 10, a few % at the cap.",
)

for _p in (MATH_16K, CODE_8K, REASONING_32K, TINY):
    PRESETS.add(_p.name, _p)
