"""Synthetic RL-rollout length traces from named presets.

The generative model, per prompt i and RL step s (all vectorized over prompts and samples):

- each prompt has a *mode* (e.g. "answers directly" vs "reasons at length"; this makes the
  marginal multi-modal) and a latent *difficulty* z_i ~ N(0, 1);
- between steps z follows an AR(1) walk with persistence ``persistence`` (stable ranks), and a
  ``mover_rate`` share of prompts redraw mode and z (the few prompts whose rank jumps);
- the group's log-median length is ``log(mode_median) + sigma_prompt * z + drift_per_step * s``
  (a slow drift of the overall scale, as response lengths grow during RL training);
- each sample adds ``sigma_within`` log-normal noise (within-group correlation is the ratio
  of between-prompt to total log variance), and with probability
  ``runaway_rate * exp(runaway_hard * z)`` runs away to near the cap (repetition loops, endless
  reasoning), which puts a non-trivial mass exactly at the cap;
- lengths are rounded and clipped to [1, cap]; a rollout at the cap is ``finished = False``.

Every step draws from its own ``SeedSequence([seed, 0, step])`` stream, so the output does not
depend on how rows are batched, and the same seed gives bit-identical files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.core.registry import Registry
from specroll.traces._io import TraceWriter
from specroll.traces._preset import SynthPreset
from specroll.traces._schema import TraceMeta
from specroll.traces._trace import Trace

PRESETS: Registry[SynthPreset] = Registry("trace preset")


def _seed_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *key])))


def _check(preset: SynthPreset, prompts: int, samples: int, steps: int, seed: int) -> None:
    for name, v in (("prompts", prompts), ("samples", samples), ("steps", steps)):
        if v < 1:
            raise SpecrollError(f"{name} must be >= 1, got {v}", field=name,
                                fix=f"pass --{name} N with N >= 1")
    if seed < 0:
        raise SpecrollError(f"seed must be >= 0, got {seed}", field="seed", fix="pass a non-negative seed")
    if abs(sum(preset.mode_weights) - 1.0) > 1e-6 or len(preset.mode_weights) != len(preset.mode_medians):
        raise SpecrollError("mode_weights must sum to 1 and match mode_medians", field="mode_weights",
                            fix="fix the preset definition")


def iter_synth_steps(preset: SynthPreset, prompts: int, samples: int, steps: int,
                     seed: int) -> Iterator[dict[str, np.ndarray]]:
    """Yield one step's columns at a time (rows ordered by prompt_id, sample)."""
    _check(preset, prompts, samples, steps, seed)
    cap = preset.max_response_len
    weights = np.asarray(preset.mode_weights)
    log_medians = np.log(np.asarray(preset.mode_medians, dtype=np.float64))
    init = _seed_rng(seed, 1)
    z = init.standard_normal(prompts)
    mode = init.choice(len(weights), size=prompts, p=weights)
    plen = np.exp(np.log(preset.prompt_len_median) + preset.prompt_len_sigma * init.standard_normal(prompts))
    plen = np.clip(np.rint(plen), 1, 2**31 - 1).astype(np.int32)
    pid = np.repeat(np.arange(prompts, dtype=np.int64), samples)
    smp = np.tile(np.arange(samples, dtype=np.int32), prompts)
    rho = preset.persistence
    icc_target = preset.sigma_prompt**2 / (preset.sigma_prompt**2 + preset.sigma_within**2)
    for s in range(steps):
        rng = _seed_rng(seed, 0, s)
        if s > 0:
            z = rho * z + np.sqrt(1 - rho**2) * rng.standard_normal(prompts)
            movers = rng.random(prompts) < preset.mover_rate
            z[movers] = rng.standard_normal(int(movers.sum()))
            mode[movers] = rng.choice(len(weights), size=int(movers.sum()), p=weights)
        eps = rng.standard_normal((prompts, samples))
        if preset.quantile_table is None:
            log_len = (log_medians[mode] + preset.sigma_prompt * z)[:, None] + preset.sigma_within * eps
        else:
            # Gaussian copula: a standard-normal latent with the same between/within split,
            # pushed through the empirical quantile function of the measured marginal.
            from scipy.special import ndtr

            latent = np.sqrt(icc_target) * z[:, None] + np.sqrt(1 - icc_target) * eps
            table = np.asarray(preset.quantile_table, dtype=np.float64)
            idx = np.minimum((ndtr(latent) * len(table)).astype(np.int64), len(table) - 1)
            log_len = np.log(table[idx])
        log_len = log_len + preset.drift_per_step * s
        p_run = np.minimum(preset.runaway_rate * np.exp(preset.runaway_hard * z), 0.5)
        runaway = rng.random((prompts, samples)) < p_run[:, None]
        run_len = np.log(cap) + 0.05 + 0.25 * rng.standard_normal((prompts, samples))
        log_len = np.where(runaway, run_len, log_len)
        rlen = np.clip(np.rint(np.exp(np.minimum(log_len, np.log(cap) + 1.0))), 1, cap)
        rlen = rlen.astype(np.int32).ravel()
        yield {
            "step": np.full(prompts * samples, s, dtype=np.int32),
            "prompt_id": pid,
            "sample": smp,
            "prompt_len": np.repeat(plen, samples),
            "response_len": rlen,
            "finished": rlen < cap,
        }


def _meta(preset: SynthPreset, prompts: int, samples: int, steps: int, seed: int) -> TraceMeta:
    return TraceMeta(
        max_response_len=preset.max_response_len, source=f"synthetic:{preset.name} seed={seed}",
        model="", temperature=preset.temperature,
        extra={"synthetic": {"preset": preset.to_dict(), "prompts": prompts, "samples": samples,
                             "steps": steps, "seed": seed}},
    )


def _defaults(p: SynthPreset, prompts: int | None, samples: int | None,
              steps: int | None) -> tuple[int, int, int]:
    return (p.prompts if prompts is None else prompts, p.samples if samples is None else samples,
            p.steps if steps is None else steps)


def get_preset(preset: str | SynthPreset) -> SynthPreset:
    if isinstance(preset, SynthPreset):
        return preset
    if preset == "servegen-r1":
        from specroll.traces._servegen import servegen_preset

        return servegen_preset()
    if preset not in PRESETS:
        raise SpecrollError(f"unknown trace preset '{preset}'", field="preset",
                            fix=f"use one of: {', '.join(preset_names())}")
    return PRESETS.get(preset)


def preset_names() -> list[str]:
    """Parametric presets plus the data-backed ``servegen-r1``."""
    return sorted([*PRESETS.names(), "servegen-r1"])


def synthesize(preset: str | SynthPreset, prompts: int | None = None, samples: int | None = None,
               steps: int | None = None, seed: int = 0) -> Trace:
    """An in-memory synthetic trace (for files of millions of rows use :func:`synthesize_to_file`)."""
    p = get_preset(preset)
    prompts, samples, steps = _defaults(p, prompts, samples, steps)
    parts = list(iter_synth_steps(p, prompts, samples, steps, seed))
    cols = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    return Trace.from_columns(_meta(p, prompts, samples, steps, seed), cols)


def synthesize_to_file(path: str | Path, preset: str | SynthPreset, prompts: int | None = None,
                       samples: int | None = None, steps: int | None = None, seed: int = 0,
                       progress_bar: Any = None) -> int:
    """Stream a synthetic trace to ``path`` one step at a time (memory ~ one step); returns rows."""
    p = get_preset(preset)
    prompts, samples, steps = _defaults(p, prompts, samples, steps)
    with TraceWriter(path, _meta(p, prompts, samples, steps, seed)) as w:
        for cols in iter_synth_steps(p, prompts, samples, steps, seed):
            w.write_batch(cols)
            if progress_bar is not None:
                progress_bar.update(1)
    return w.rows


def with_overrides(preset: SynthPreset, **overrides: Any) -> SynthPreset:
    """A copy of ``preset`` with some parameters changed (unknown names are an error)."""
    known = set(asdict(preset))
    bad = sorted(set(overrides) - known)
    if bad:
        raise SpecrollError(f"unknown preset parameter(s) {bad}", field=bad[0],
                            fix=f"use one of {sorted(known)}")
    return replace(preset, **overrides)
