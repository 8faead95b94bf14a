"""specroll validate: real runs vs simulation of the same workload, on the exact-arithmetic toy model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from specroll.analysis import ValidateConfig, error_terms, validate
from specroll.calibration import load_profile
from specroll.cli import main
from specroll.core.errors import SpecrollError

TOY = {"model": "toy", "prompts": 2, "samples": 3, "steps": 2, "max_new_tokens": 40, "max_batch": 4,
       "temperature": 0.8}


def toy_config(**over):
    d = {"profile": "cpu:smollm2-135m", "repeats": 2, "seed": 3, "workload": dict(TOY),
         "drafter": {"name": "suffix"},
         "policies": [{"name": "fixed", "params": {"k": 3}}, {"name": "das"}]}
    d.update(over)
    return ValidateConfig.from_dict(d)


def test_error_terms_split_the_makespan_error_exactly():
    real = {"makespan_s": 10.0, "iterations": 100, "decode_s": 8.0, "prefill_s": 1.5, "accepted": 0,
            "tokens": 0}
    sim = {"makespan_s": 11.0, "iterations": 90, "decode_s": 9.9, "prefill_s": 1.1, "accepted": 0,
           "tokens": 0}
    e = error_terms(real, sim)
    assert sum(e.values()) == pytest.approx(sim["makespan_s"] / real["makespan_s"] - 1.0)
    assert e["iteration_count"] == pytest.approx((90 - 100) * 0.08 / 10.0)  # fewer iterations
    assert e["iteration_time"] == pytest.approx(90 * (0.11 - 0.08) / 10.0)  # each one dearer
    # real host time outside iterations (0.5 s) the simulator does not charge, prefill 0.4 s cheaper
    assert e["admission"] == pytest.approx((1.1 - 1.5 - 0.5) / 10.0)


def test_validate_runs_real_and_sim_and_compares(tmp_path):
    out = tmp_path / "v"
    s = validate(toy_config(), out, profile=load_profile("cpu:smollm2-135m"))
    assert s["outputs_identical"] is True
    assert set(s["policies"]) == {"ar", "fixed", "das"}
    for key, p in s["policies"].items():
        assert sum(p["error_terms"].values()) == pytest.approx(p["makespan_error"], abs=1e-9), key
        lo, hi = p["makespan_error_spread"]
        assert lo <= hi and len(p["makespan_real_s_repeats"]) == 2
    # The simulator replays the recorded trace with its offline match lengths: the accepted draft
    # tokens and the iterations it takes are the real engine's own (timing aside), for every
    # policy whose decisions do not read measured iteration times (tlt's bandit reward does).
    for key in ("ar", "fixed", "das"):
        p = s["policies"][key]
        assert p["iterations_sim"] == p["iterations_real"], key
        assert p["accepted_per_iter_sim"] == pytest.approx(p["accepted_per_iter_real"]), key
    assert s["policies"]["ar"]["accepted_per_iter_real"] == 0
    assert s["policies"]["fixed"]["accepted_per_iter_real"] > 0
    assert s["speedup_predicted"]["fixed"] > 0 and s["speedup_measured"]["fixed"] > 0
    assert abs(s["makespan_error"]["overall"]) == max(abs(s["makespan_error"][k]) for k in s["policies"])
    for f in ("summary.json", "comparison.parquet", "parity.png", "trace.parquet", "profile.json",
              "real/ar/rep0/trace.parquet", "real/das/rep1/iterations.parquet", "sim/fixed/summary.json"):
        assert (out / f).exists(), f
    import pyarrow.parquet as pq

    cmp = pq.read_table(out / "comparison.parquet").to_pydict()
    assert len(cmp["policy"]) == 3 * 2 * TOY["steps"]  # policies x repeats x steps
    assert json.loads((out / "summary.json").read_text())["kind"] == "validate"


@pytest.mark.parametrize("over, field", [
    ({"repeats": 0}, "repeats"),
    ({"drafter": {"name": "none"}}, "drafter.name"),
    ({"policies": [{"name": "nope"}]}, "policies"),
    ({"policies": [{"name": "fixed", "params": {"kk": 1}}]}, "params"),
    ({"policies": [{"name": "fixed"}, {"name": "fixed"}]}, "policies"),
    ({"workload": {**TOY, "max_new_tokens": 0}}, "workload.max_new_tokens"),
    ({"workload": {**TOY, "policy": "das"}}, "workload.policy"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_configs_are_one_clear_error(over, field):
    with pytest.raises(SpecrollError) as exc:
        toy_config(**over)
    assert field in (exc.value.field or "")


def test_cli_bad_config_exits_2_without_traceback(tmp_path, capsys):
    cfg = tmp_path / "v.toml"
    cfg.write_text('repeats = 0\n[workload]\nmodel = "toy"\n')
    assert main(["validate", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "repeats" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_datasheet_profile_is_refused(tmp_path):
    cfg = toy_config(profile="h100-sxm:smollm2-135m")
    from specroll.analysis._validate import _profile

    cfg.workload["model"] = "smollm2-135m"
    with pytest.raises(SpecrollError, match="datasheet"):
        _profile(cfg, tmp_path)
    assert np.isfinite(load_profile("cpu:smollm2-135m").heldout_mape)
