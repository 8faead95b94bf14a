"""The closest vLLM ``speculative_config`` (suffix decoding) to a policy, and what it cannot express.

vLLM's suffix-decoding knobs (``vllm/config/speculative.py``, ``SpeculativeConfig``; the proposer is
Arctic Inference's ``SuffixDecodingCache``):

- ``method: "suffix"``; ``num_speculative_tokens``: the MAXIMUM draft per request (suffix decoding
  drafts a dynamic number of tokens up to it);
- ``suffix_decoding_max_tree_depth`` (24): depth of the suffix trees, bounding prefix match +
  draft length;
- ``suffix_decoding_max_spec_factor`` (1.0): draft at most factor x the prefix-match length;
- ``suffix_decoding_min_token_prob`` (0.1): draft a token only while its estimated probability
  -- the PATH probability, the product of the frequency ratios down the tree (Arctic Inference
  ``SuffixTree::_speculate_path``) -- stays >= this value;
- ``suffix_decoding_max_cached_requests`` (10000): size of the global tree of past responses;
- ``num_speculative_tokens_per_batch_size``: ``[[lo, hi, K], ...]``, K drafted when the batch
  size is in [lo, hi] (vLLM's "Dynamic Speculative Decoding"; documented as tested with EAGLE,
  EAGLE-3 and DFlash, "other methods may or may not work", and disabled under data parallelism).

Our drafter's path probabilities (``PolicyState.draft_conf``, cumulated) play the role of the
tree's, so a threshold on the path probability maps one to one onto ``min_token_prob``. The rest
of a policy (per-request history and feedback, bandits, per-iteration token quotas) has no knob;
:func:`vllm_config` says so parameter by parameter.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.policies._base import Policy

VLLM_DEFAULTS = {"suffix_decoding_max_tree_depth": 24, "suffix_decoding_max_spec_factor": 1.0,
                 "suffix_decoding_min_token_prob": 0.1, "suffix_decoding_max_cached_requests": 10000}
_NO_FEEDBACK = "vLLM has no per-request acceptance feedback for the draft length"


@dataclass
class VllmExport:
    """``config``: the speculative_config (None = run without speculation); ``params``: per policy
    parameter, how it is expressed or why it cannot be; ``notes``: caveats of the mapping."""

    policy: dict[str, Any]
    config: dict[str, Any] | None
    params: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    clipped: list[str] = field(default_factory=list)
    """values capped to what the tuning simulated (said loudly: a caller prints them as warnings)."""

    @property
    def unexpressed(self) -> dict[str, str]:
        return {k: v for k, v in self.params.items() if v.startswith("not expressible")}

    def config_json(self) -> str:
        """The speculative_config as indented JSON, each batch-size range on one line."""
        if self.config is None:
            return "null"
        text = json.dumps(self.config, indent=2)
        return re.sub(r"\[\s*(-?\d+),\s*(-?\d+),\s*(-?\d+)\s*\]", r"[\1, \2, \3]", text)

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "speculative_config": self.config, "params": self.params,
                "unexpressed": sorted(self.unexpressed), "notes": self.notes, "clipped": self.clipped}


def batch_schedule(k_of_batch: np.ndarray) -> list[list[int]]:
    """``[[lo, hi, K], ...]`` runs of equal K over batch sizes 1..len(k_of_batch)."""
    out: list[list[int]] = []
    for b, k in enumerate(np.asarray(k_of_batch, dtype=np.int64).tolist(), start=1):
        if out and out[-1][2] == k:
            out[-1][1] = b
        else:
            out.append([b, b, int(k)])
    return out


def check_tuned(pol: Policy, tuning: dict[str, Any], *, file: str | None = None) -> int | None:
    """Refuse a parameter outside what the study searched (or other than its pin); the tuning's
    simulated kmax (None: unknown). ``tuning``: best_policy.json's record of the study."""
    from specroll.policies._identity import canonical

    p = canonical(dataclasses.asdict(pol.params))
    fix = ("export the best_policy.json the tuner wrote, or tune again (the simulated kmax bounds the "
           "draft lengths it can search)")
    for name, spec in (tuning.get("search_space") or {}).items():
        v = p.get(name)
        if spec.get("choices") is not None:
            ok, what = v in spec["choices"], f"one of {spec['choices']}"
        else:
            ok = isinstance(v, int | float) and spec["low"] <= v <= spec["high"]
            what = f"{spec['low']}..{spec['high']}"
        if not ok:
            raise SpecrollError(f"{name} = {v} lies outside what was tuned ({what})", file=file,
                                field=f"params.{name}", fix=fix)
    for name, v in (tuning.get("pins") or {}).items():
        if name in p and p[name] != v:
            raise SpecrollError(f"{name} = {p[name]} but the study was tuned with it pinned to {v}",
                                file=file, field=f"params.{name}", fix=fix)
    kmax = tuning.get("kmax")
    return None if kmax is None else int(kmax)


def vllm_config(policy: Policy | dict[str, Any], *, max_batch: int = 256, per_batch: bool = True,
                kmax: int | None = None, tuning: dict[str, Any] | None = None,
                file: str | None = None) -> VllmExport:
    """The closest suffix-decoding speculative_config to ``policy`` (a Policy or best_policy.json dict).

    ``max_batch``: the engine's batch cap (vLLM ``max_num_seqs``), the range of the batch-size
    schedule. ``per_batch=False`` leaves out ``num_speculative_tokens_per_batch_size`` (a vLLM or a
    deployment without it): batch-size dependence then becomes a per-parameter "not expressible".
    ``kmax``: the drafter's proposal cap, if the policy's own cap is larger. ``tuning``: the study
    record of a tuned policy (best_policy.json's ``tuning``): a parameter outside what it searched is
    refused, and a draft above the kmax it simulated is capped there, loudly (``clipped``).
    """
    from specroll.policies._base import policy_from_dict

    pol = policy_from_dict(policy) if isinstance(policy, dict) else policy
    if not pol.deployable:
        raise SpecrollError(f"policy '{pol.name}' is not deployable (it reads the true match lengths)",
                            field="policy", fix="export a deployable policy, e.g. a tuned das or threshold")
    if max_batch < 1:
        raise SpecrollError(f"max_batch must be >= 1, got {max_batch}", field="--max-batch")
    fn = _FAMILIES.get(pol.name)
    if fn is None:
        raise SpecrollError(f"no vLLM mapping for policy '{pol.name}'", field="policy",
                            fix=f"export one of: {', '.join(sorted(_FAMILIES))}")
    p = dataclasses.asdict(pol.params)
    b = np.arange(1, max_batch + 1)
    cap = 10**9 if kmax is None else int(kmax)
    tuned_kmax = None if tuning is None else check_tuned(pol, tuning, file=file)
    k_b, extra, params = fn(pol, p, b)
    k_b = np.minimum(np.asarray(k_b, dtype=np.int64), cap)
    out = VllmExport(pol.to_dict(), None, params)
    if tuned_kmax is not None and int(k_b.max()) > tuned_kmax:
        out.clipped.append(f"the policy drafts up to {int(k_b.max())} tokens at some batch sizes, but it "
                           f"was tuned where drafts of at most {tuned_kmax} tokens exist: exported capped "
                           f"at {tuned_kmax} (no simulation tried more)")
        k_b = np.minimum(k_b, tuned_kmax)
    k_top = int(k_b.max())
    if k_top <= 0:
        out.notes.append("the policy never drafts at these batch sizes: run without speculative_config")
        return out
    cfg: dict[str, Any] = {"method": "suffix", "num_speculative_tokens": k_top, **extra}
    if k_top + 8 > VLLM_DEFAULTS["suffix_decoding_max_tree_depth"]:
        # The tree depth bounds prefix match + draft: leave room for an 8-token match.
        cfg["suffix_decoding_max_tree_depth"] = k_top + 8
    sched = batch_schedule(k_b)
    if len(sched) > 1:
        if per_batch:
            cfg["num_speculative_tokens_per_batch_size"] = sched
            out.notes.append("num_speculative_tokens_per_batch_size: vLLM documents it as tested with "
                             "EAGLE/EAGLE-3/DFlash only and turns it off under data parallelism; "
                             "check that your vLLM applies it to method 'suffix', else re-export with "
                             "--no-per-batch")
        else:
            for name, how in out.params.items():
                if "num_speculative_tokens_per_batch_size" in how:
                    out.params[name] = ("not expressible without num_speculative_tokens_per_batch_size: "
                                        "the draft length depends on the batch size; exported as its "
                                        f"maximum {k_top}")
    out.config = cfg
    out.notes.append("vLLM also caps each draft at suffix_decoding_max_spec_factor x the prefix-match "
                     "length (default 1.0), a drafter rule the simulator's drafter may not share; on "
                     "Model Runner V2 suffix decoding always drafts num_speculative_tokens and ignores "
                     "max_spec_factor and min_token_prob")
    return out


def _ar(pol: Policy, p: dict[str, Any], b: np.ndarray):
    return np.zeros(b.size), {}, {}


def _fixed(pol: Policy, p: dict[str, Any], b: np.ndarray):
    k = int(p["k"])
    return np.full(b.size, k), {}, {"k": f"num_speculative_tokens = {k} (vLLM drafts up to it, "
                                         "stopping earlier when the tree's path probability falls "
                                         "below suffix_decoding_min_token_prob)"}


def _threshold(pol: Policy, p: dict[str, Any], b: np.ndarray):
    prob = round(1.0 - float(p["h"]), 6)
    return np.full(b.size, int(p["k_max"])), {"suffix_decoding_min_token_prob": prob}, {
        "h": f"suffix_decoding_min_token_prob = 1 - h = {prob} (both stop drafting once the path "
             "probability < 1 - h)",
        "k_max": f"num_speculative_tokens = {p['k_max']}",
        "k_min": "not expressible: vLLM cannot force a minimum draft below the probability threshold",
        "fallback": "not expressible: without a confidence signal the policy drafts from the request's "
                    f"acceptance EMA; {_NO_FEEDBACK} (the suffix tree always has its own probabilities)",
        "prior_alpha": "not expressible: part of the EMA fallback",
    }


def _das(pol: Policy, p: dict[str, Any], b: np.ndarray):
    from specroll.policies._das import das_optimal_k

    k_max = int(p["k_max"])
    if p["mode"] == "schedule":
        k = np.minimum(np.round(p["k_long"] * np.maximum(1.0, p["full_batch"] / b) ** p["growth"]), k_max)
    else:  # every request a Long one: s = b speculating requests
        k = das_optimal_k(p["alpha"], (p["base_tokens"] + p["per_request_tokens"] * b) / b, k_max)
    if p["token_quota"] >= 0:  # the per-request share of the quota when every request drafts
        k = np.minimum(k, np.maximum(p["token_quota"] - b, 0) // b)
    sched = "num_speculative_tokens_per_batch_size (the Long budget per batch size)"
    lc = ("not expressible: length classes from the prompt's length history; vLLM drafts the same for "
          "every request, exported as the Long class's budget (Long requests set the makespan)")
    return k, {}, {
        "mode": sched, "growth": sched, "full_batch": sched, "k_max": sched + " capped at k_max",
        "k_long": sched,
        "token_quota": ("not expressible as a quota (Long-first serving); approximated in "
                        "num_speculative_tokens_per_batch_size by the per-request share (quota - B) / B"
                        if p["token_quota"] >= 0 else "unused (-1)"),
        "alpha": sched if p["mode"] == "closed_form" else "unused in mode 'schedule'",
        "base_tokens": sched if p["mode"] == "closed_form" else "unused in mode 'schedule'",
        "per_request_tokens": sched if p["mode"] == "closed_form" else "unused in mode 'schedule'",
        "long_frac": lc, "short_frac": lc, "k_medium": lc,
    }


def _tlt(pol: Policy, p: dict[str, Any], b: np.ndarray):
    top = max(p["budgets"])
    k = np.where(b <= p["batch_threshold"], top, 0)
    return k, {}, {
        "batch_threshold": f"num_speculative_tokens_per_batch_size: 0 above batch {p['batch_threshold']}",
        "budgets": f"not expressible: the bandit's choice among {list(p['budgets'])} is learned online; "
                   f"exported as the largest, {top}",
        "bucket_edges": "not expressible: per-bucket bandit statistics",
        "epsilon": "not expressible: bandit exploration", "seed": "not expressible: bandit RNG",
        "patience": "not expressible: vLLM switches on the batch size at once, without hysteresis",
    }


def _seer(pol: Policy, p: dict[str, Any], b: np.ndarray):
    k_max = int(p["k_max"])
    k = np.full(b.size, k_max) if p["tokens_per_iter"] < 0 else np.minimum(
        k_max, np.maximum(p["tokens_per_iter"] - b, 0) // b)
    return k, {"suffix_decoding_min_token_prob": round(float(p["min_gain"]), 6)}, {
        "min_gain": f"suffix_decoding_min_token_prob = {p['min_gain']} (a token's marginal gain is its "
                    "path probability)",
        "k_max": f"num_speculative_tokens = {k_max}",
        "tokens_per_iter": "not expressible as a per-iteration budget allocated by marginal gain across "
                           "requests; approximated in num_speculative_tokens_per_batch_size by the "
                           "per-request share (tokens_per_iter - B) / B",
        "prior_alpha": f"not expressible: {_NO_FEEDBACK}",
    }


def _adaptive(pol: Policy, p: dict[str, Any], b: np.ndarray):
    k_max = int(p["k_max"])
    fb = f"not expressible: {_NO_FEEDBACK} (suffix decoding sizes drafts by the match length instead)"
    return np.full(b.size, k_max), {}, {
        "k_max": f"num_speculative_tokens = {k_max}", "mode": fb, "k_init": fb, "k_min": fb, "margin": fb}


def _mdp(pol: Policy, p: dict[str, Any], b: np.ndarray):
    if pol.table is None:
        raise SpecrollError("the mdp policy's table needs the cost profile of the deployment",
                            field="--profile",
                            fix="pass --profile DEVICE:MODEL (the profile its decisions are priced with)")
    edges = np.asarray(p["conf_edges"])
    bucket = int(np.searchsorted(edges, p["alpha"], side="right"))
    bi = np.maximum(np.searchsorted(pol.batches, b, side="right") - 1, 0)
    k = pol.table[bi, bucket]
    sched = f"num_speculative_tokens_per_batch_size (the table's column for confidence {p['alpha']})"
    conf = ("not expressible: the table's confidence dimension (first-token confidence buckets); vLLM "
            "only stops on the path probability (suffix_decoding_min_token_prob, left at its default)")
    return k, {}, {"ctx_len": sched, "max_batch": sched, "k_max": sched, "alpha": sched,
                   "conf_edges": conf, "bucket_alpha": conf, "persistence": conf}


_FAMILIES = {"ar": _ar, "fixed": _fixed, "threshold": _threshold, "das": _das, "tlt": _tlt,
             "seer": _seer, "adaptive": _adaptive, "mdp": _mdp}
