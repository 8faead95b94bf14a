"""CostProfile: prediction semantics, what-if profiles, JSON validation, out-of-range warning."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from specroll.calibration import (
    DEVICES,
    MODEL_SHAPES,
    CostProfile,
    IterationBatch,
    builtin_names,
    load_profile,
    whatif_profile,
)
from specroll.calibration._whatif import PROFILES_DIR
from specroll.core.errors import SpecrollError

WHATIF_MODELS = ["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b",
                 "llama-3.1-8b", "llama-3.1-70b", "deepseek-r1-distill-qwen-7b"]
WHATIF_DEVICES = ["h100-sxm", "h200", "a100-80gb", "b200", "l40s"]


def _one(q: float, c: float, n: int = 1) -> IterationBatch:
    return IterationBatch.from_requests(np.full(n, float(q)), np.full(n, float(c)))


def _all_profiles() -> list[CostProfile]:
    profs = [load_profile(p) for p in sorted(PROFILES_DIR.glob("*.json"))]
    profs += [whatif_profile(d, m, tp=tp) for d in WHATIF_DEVICES for m in ("qwen2.5-7b", "smollm2-135m")
              for tp in (1, 2)]
    return profs


def test_devices_registered() -> None:
    assert set(WHATIF_DEVICES) <= set(DEVICES.names())
    h100 = DEVICES.get("h100-sxm")
    assert h100.peak_flops == pytest.approx(989.4e12) and h100.mem_bw == pytest.approx(3.35e12)


@pytest.mark.parametrize("device", WHATIF_DEVICES)
def test_whatif_every_device_and_model_builds(device: str) -> None:
    spec = DEVICES.get(device)
    for model in WHATIF_MODELS:
        weights = MODEL_SHAPES.get(model).weight_bytes(2.0)
        for tp in (1, 2, 4, 8):
            if weights / tp > 0.9 * spec.memory_bytes:
                with pytest.raises(SpecrollError, match="does not fit"):
                    whatif_profile(device, model, tp=tp)
                continue
            prof = whatif_profile(device, model, tp=tp)
            assert prof.kind == "datasheet" and prof.heldout_mape is None
            assert prof.kv_capacity_tokens > 0
            t = prof.iteration_time(_one(1, 1000))[0]
            floor = weights / tp / spec.mem_bw
            # Bounded below by weight bytes / bandwidth, and not absurdly above it (plus all-reduce hops).
            hops = 2 * MODEL_SHAPES.get(model).n_layers * 2 * tp * spec.link_latency if tp > 1 else 0
            assert floor < t < 20 * floor + 5e-3 + hops, (device, model, tp, t, floor)


def test_h100_7b_decode_is_a_few_ms() -> None:
    prof = load_profile("h100-sxm:qwen2.5-7b")
    t = prof.iteration_time(_one(1, 512))[0]
    assert 15.2e9 / 3.35e12 < t < 15e-3
    # Verifying 5 tokens on a small batch costs little more than decoding one (memory bound) ...
    assert prof.iteration_time(_one(5, 512, n=4))[0] < 1.3 * prof.iteration_time(_one(1, 512, n=4))[0]
    # ... while a large prefill is compute bound: far more than a decode.
    assert prof.prefill_time(np.full(8, 2048)) > 20 * t


def test_tp_all_reduce_costs_something() -> None:
    one = whatif_profile("h100-sxm", "llama-3.1-70b", tp=2)
    more = whatif_profile("h100-sxm", "llama-3.1-70b", tp=8)
    b = _one(1, 1000, n=8)
    # TP=8 moves 4x fewer weight bytes per GPU, but pays all-reduce hops: faster, not 4x faster.
    assert more.iteration_time(b)[0] < one.iteration_time(b)[0]
    assert more.iteration_time(b)[0] > one.iteration_time(b)[0] / 4


def test_idle_engines_cost_zero_and_vectorized() -> None:
    prof = whatif_profile("h100-sxm", "qwen2.5-7b")
    q = np.array([1, 1, 3, 1, 5.0])
    c = np.array([10, 900, 50, 2000, 7.0])
    eng = np.array([0, 0, 2, 2, 3])
    batch = IterationBatch.from_requests(q, c, engine=eng, n_engines=5)
    t = prof.iteration_time(batch)
    assert t.shape == (5,) and t[1] == 0 and t[4] == 0 and (t[[0, 2, 3]] > 0).all()
    for e in (0, 2, 3):
        alone = prof.iteration_time(IterationBatch.from_requests(q[eng == e], c[eng == e]))[0]
        assert t[e] == pytest.approx(alone)


@pytest.mark.parametrize("prof", _all_profiles(), ids=repr)
def test_monotone_in_tokens_and_context(prof: CostProfile) -> None:
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(200):
            n = int(rng.integers(1, 64))
            q = rng.integers(1, 9, n).astype(float)
            c = rng.integers(0, 4000, n).astype(float)
            base = prof.iteration_time(IterationBatch.from_requests(q, c))[0]
            i = int(rng.integers(n))
            q2, c2 = q.copy(), c.copy()
            q2[i] += rng.integers(1, 4)
            c2[i] += rng.integers(1, 500)
            assert prof.iteration_time(IterationBatch.from_requests(q2, c))[0] >= base
            assert prof.iteration_time(IterationBatch.from_requests(q, c2))[0] >= base
            # One more request never costs less either.
            more = prof.iteration_time(IterationBatch.from_requests(np.append(q, 1), np.append(c, 0)))[0]
            assert more >= base


def test_skewed_batch_costs_more_than_mean_when_padded() -> None:
    prof = whatif_profile("h100-sxm", "qwen2.5-7b")
    coef = dict(prof.coefficients, a=0.0)  # a fully padded backend
    padded = CostProfile(shape=prof.shape, device=prof.device, dtype="bfloat16", tp=1, kind="datasheet",
                         coefficients=coef, ranges=None)
    c_skew = np.array([100.0] * 31 + [8000.0])
    c_mean = np.full(32, c_skew.mean())
    q = np.ones(32)
    skew_t = padded.iteration_time(IterationBatch.from_requests(q, c_skew))[0]
    mean_t = padded.iteration_time(IterationBatch.from_requests(q, c_mean))[0]
    assert skew_t > 1.5 * mean_t


def test_save_load_roundtrip(tmp_path) -> None:
    prof = whatif_profile("a100-80gb", "llama-3.1-8b", tp=2)
    path = prof.save(tmp_path / "p.json")
    back = load_profile(path, expect_model="llama-3.1-8b")
    b = _one(3, 700, n=5)
    assert back.iteration_time(b)[0] == prof.iteration_time(b)[0]
    assert back.to_dict() == json.loads(path.read_text())


def _bad(tmp_path, mutate) -> str:
    d = whatif_profile("h100-sxm", "qwen2.5-7b").to_dict()
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d, allow_nan=True))
    with pytest.raises(SpecrollError) as err:
        load_profile(path, expect_model="qwen2.5-7b")
    assert str(path) in err.value.message and "Fix:" in err.value.message
    return err.value.message


def test_bad_profiles_rejected(tmp_path) -> None:
    assert "coefficients.e_bw" in _bad(tmp_path, lambda d: d["coefficients"].pop("e_bw"))
    assert "coefficients.t_fixed" in _bad(tmp_path, lambda d: d["coefficients"].update(t_fixed=math.nan))
    assert "field 'tp'" in _bad(tmp_path, lambda d: d.pop("tp"))
    assert "device.mem_bw" in _bad(tmp_path, lambda d: d["device"].update(mem_bw=float("nan")))
    assert "ranges.n" in _bad(tmp_path, lambda d: d.update(ranges={"n": [5, 1]}))
    assert "heldout_mape" in _bad(tmp_path, lambda d: d.update(kind="measured"))
    msg = _bad(tmp_path, lambda d: d.update(model="llama-3.1-8b", shape=None))
    assert "field 'model'" in msg and "qwen2.5-7b" in msg


def test_wrong_model_names_fix() -> None:
    with pytest.raises(SpecrollError, match="specroll calibrate --model llama-3.1-8b"):
        load_profile("h100-sxm:qwen2.5-7b", expect_model="llama-3.1-8b")
    with pytest.raises(SpecrollError, match="no built-in profile"):
        load_profile("tpu-v9:qwen2.5-7b")
    with pytest.raises(SpecrollError, match="unknown model"):
        load_profile("h100-sxm:gpt-17")


def test_builtin_names_resolve() -> None:
    names = builtin_names()
    assert "h100-sxm:qwen2.5-7b" in names
    for name in names[:: max(1, len(names) // 10)]:
        assert isinstance(load_profile(name), CostProfile)


def test_out_of_range_warns_once() -> None:
    d = whatif_profile("h100-sxm", "qwen2.5-7b").to_dict()
    d["ranges"] = {"n": [1, 16], "q_max": [1, 8], "c_max": [0, 1024]}
    prof = CostProfile.from_dict(d)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        prof.iteration_time(_one(1, 500, n=8))
        assert not rec
        prof.iteration_time(_one(1, 5000, n=8))
        prof.iteration_time(_one(1, 5000, n=64))
    assert len(rec) == 1 and "c_max" in str(rec[0].message)


def test_whatif_takes_coefficients_only_from_a_measured_profile_of_the_same_kind(monkeypatch) -> None:
    import specroll.calibration._whatif as W

    cpu = load_profile("cpu:smollm2-135m")
    monkeypatch.setattr(W, "measured_profiles", lambda: (cpu,))
    gpu = whatif_profile("h100-sxm", "qwen2.5-7b")
    # Only a CPU is measured: an H100 keeps the stated assumptions, nothing of the CPU's.
    assert set(gpu.extra["coefficients_source"].values()) == {"assumed"}
    assert gpu.coefficients["e_bw"] == W._ASSUMED["e_bw"]
    # A measured GPU profile (here: the H100 what-if relabelled as measured, with its own values)
    # is the nearest of its kind: every coefficient transfers, efficiencies capped at 1.
    coef = {**gpu.coefficients, "e_bw": 1.3, "e_f": 0.5, "t_fixed": 2e-3}
    measured = CostProfile(shape=gpu.shape, device=gpu.device, dtype="bfloat16", tp=1, kind="measured",
                           coefficients=coef, heldout_mape=0.03, ranges=None)
    monkeypatch.setattr(W, "measured_profiles", lambda: (cpu, measured))
    h200 = whatif_profile("h200", "qwen2.5-7b")
    assert h200.coefficients["e_bw"] == 1.0 and h200.coefficients["e_f"] == 0.5
    assert h200.coefficients["t_fixed"] == 2e-3
    assert all(v.startswith("measured:h100-sxm") for v in h200.extra["coefficients_source"].values())
