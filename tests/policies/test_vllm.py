"""policies.vllm_config: the closest vLLM suffix-decoding speculative_config to each family."""

import json

import numpy as np
import pytest

from specroll.calibration import load_profile
from specroll.cli import main
from specroll.core.errors import SpecrollError
from specroll.policies import POLICIES, make_policy, vllm_config
from specroll.policies._vllm import batch_schedule

# Option names of vLLM's SpeculativeConfig (vllm/config/speculative.py) that the export may use.
VLLM_KEYS = {"method", "num_speculative_tokens", "num_speculative_tokens_per_batch_size",
             "suffix_decoding_max_tree_depth", "suffix_decoding_max_spec_factor",
             "suffix_decoding_min_token_prob", "suffix_decoding_max_cached_requests"}


def _k_at(config, b):
    """The draft cap vLLM applies at batch size b."""
    for lo, hi, k in config.get("num_speculative_tokens_per_batch_size", [[1, 10**9, None]]):
        if lo <= b <= hi:
            return config["num_speculative_tokens"] if k is None else k
    raise AssertionError(f"batch {b} not covered")


def test_batch_schedule_runs_cover_every_batch_size():
    assert batch_schedule(np.array([3, 3, 2, 2, 2, 0])) == [[1, 2, 3], [3, 5, 2], [6, 6, 0]]
    assert batch_schedule(np.array([4])) == [[1, 1, 4]]


@pytest.mark.parametrize("name", ["ar", "fixed", "threshold", "das", "tlt", "seer", "adaptive", "mdp"])
def test_every_deployable_family_exports_and_accounts_for_every_parameter(name):
    pol = make_policy(name)
    if pol.needs_cost:
        pol.bind_cost(load_profile("h100-sxm:qwen2.5-7b"))
    ex = vllm_config(pol, max_batch=128)
    assert set(ex.params) == set(pol.to_dict()["params"])  # each parameter: expressed or why not
    assert all(v for v in ex.params.values())
    if ex.config is not None:
        assert set(ex.config) <= VLLM_KEYS and ex.config["method"] == "suffix"
        assert ex.config["num_speculative_tokens"] >= 1
        for lo, hi, k in ex.config.get("num_speculative_tokens_per_batch_size", []):
            assert 1 <= lo <= hi <= 128 and 0 <= k <= ex.config["num_speculative_tokens"]
    json.dumps(ex.to_dict())  # strict JSON


def test_ar_means_no_speculation_and_oracle_is_refused():
    assert vllm_config({"policy": "ar"}).config is None
    with pytest.raises(SpecrollError, match="not deployable"):
        vllm_config(make_policy("oracle"))


def test_fixed_and_threshold_map_one_to_one():
    ex = vllm_config(make_policy("fixed", k=5))
    assert ex.config == {"method": "suffix", "num_speculative_tokens": 5} and not ex.unexpressed
    ex = vllm_config(make_policy("threshold", h=0.8, k_max=12, k_min=2))
    assert ex.config["suffix_decoding_min_token_prob"] == pytest.approx(0.2)
    assert ex.config["num_speculative_tokens"] == 12
    assert set(ex.unexpressed) == {"k_min", "fallback", "prior_alpha"}


def test_das_schedule_follows_the_long_budget_per_batch_size():
    pol = make_policy("das", k_long=4, growth=1.0, full_batch=64, k_max=12)
    cfg = vllm_config(pol, max_batch=256).config
    for b in (1, 5, 16, 32, 64, 100, 256):
        want = min(round(4 * max(1.0, 64 / b) ** 1.0), 12)
        assert _k_at(cfg, b) == want, b
    assert cfg["num_speculative_tokens"] == 12
    ex = vllm_config(pol)
    assert {"long_frac", "short_frac", "k_medium"} <= set(ex.unexpressed)


def test_das_closed_form_and_quota_are_batch_dependent_too():
    from specroll.policies import das_optimal_k

    pol = make_policy("das", mode="closed_form", alpha=0.8, token_quota=512)
    cfg = vllm_config(pol, max_batch=256).config
    for b in (1, 8, 64, 200):
        k = min(int(das_optimal_k(0.8, (64.0 + b) / b, 16)), max(512 - b, 0) // b)
        assert _k_at(cfg, b) == k


def test_static_export_marks_batch_dependence_unexpressed():
    pol = make_policy("tlt", batch_threshold=16, budgets=(2, 4))
    dyn = vllm_config(pol, max_batch=64)
    assert dyn.config["num_speculative_tokens_per_batch_size"] == [[1, 16, 4], [17, 64, 0]]
    static = vllm_config(pol, max_batch=64, per_batch=False)
    assert "num_speculative_tokens_per_batch_size" not in static.config
    assert "batch_threshold" in static.unexpressed and "batch_threshold" not in dyn.unexpressed


def test_seer_and_mdp():
    ex = vllm_config(make_policy("seer", tokens_per_iter=256, min_gain=0.25, k_max=8), max_batch=64)
    assert ex.config["suffix_decoding_min_token_prob"] == 0.25
    assert _k_at(ex.config, 1) == 8 and _k_at(ex.config, 64) == (256 - 64) // 64
    mdp = make_policy("mdp", max_batch=64)
    mdp.bind_cost(load_profile("h100-sxm:qwen2.5-7b"))
    cfg = vllm_config(mdp, max_batch=64).config
    bucket = int(np.searchsorted(np.asarray(mdp.params.conf_edges), mdp.params.alpha, side="right"))
    for b in (1, 3, 8, 12, 48, 64):
        bi = np.searchsorted(mdp.batches, b, side="right") - 1
        assert _k_at(cfg, b) == mdp.table[bi, bucket]


def test_kmax_caps_and_deep_drafts_get_a_deeper_tree():
    assert vllm_config(make_policy("fixed", k=30)).config["suffix_decoding_max_tree_depth"] == 38
    assert vllm_config(make_policy("fixed", k=30), kmax=8).config["num_speculative_tokens"] == 8


def test_cli_prints_config_and_writes_file(tmp_path, capsys):
    pf = tmp_path / "best_policy.json"
    pf.write_text(json.dumps({"policy": "threshold", "params": {"h": 0.75}, "objective_s": 1.0}))
    assert main(["export-vllm", str(pf)]) == 0
    out = capsys.readouterr().out
    assert '"method": "suffix"' in out and "k_min" in out and "not expressible" in out
    saved = json.loads((tmp_path / "best_policy.vllm.json").read_text())
    assert saved["speculative_config"]["suffix_decoding_min_token_prob"] == 0.25
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"policy": "nope"}))
    assert main(["export-vllm", str(bad)]) == 2
    assert "unknown policy" in capsys.readouterr().err


def test_registry_families_all_have_a_mapping_or_a_clear_error():
    for name in POLICIES.names():
        try:
            vllm_config(make_policy(name))
        except SpecrollError as exc:
            assert ("not deployable" in exc.what or "no vLLM mapping" in exc.what
                    or exc.field == "--profile"), exc.message
