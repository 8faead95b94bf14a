"""Drafter cost kinds of a profile: a draft model, self-speculation over the target's first layers,
a parallel (diffusion) drafter, and PEARL's overlap of drafting with verification."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from specroll.calibration import CostProfile, IterationBatch, get_shape, load_profile
from specroll.calibration._costmodel import DTYPE_BYTES, forward_time, make_consts
from specroll.core.errors import SpecrollError

BASE = "h100-sxm:qwen2.5-7b"


def _batch(n: int, k: int, ctx: float = 4096.0) -> IterationBatch:
    return IterationBatch.from_requests(np.full(n, k + 1.0), np.full(n, ctx), draft=np.full(n, float(k)))


def _t(prof: CostProfile, n: int, k: int, ctx: float = 4096.0) -> float:
    return float(prof.iteration_time(_batch(n, k, ctx))[0])


def _verify_only(n: int, k: int, ctx: float = 4096.0) -> float:
    return _t(load_profile(BASE), n, k, ctx)  # the what-if profile's drafter is free


def test_overlap_is_the_max_of_draft_and_verify_not_the_sum() -> None:
    base = load_profile(BASE)
    serial = base.with_drafter({"kind": "model", "model": "qwen2.5-0.5b"})
    pearl = base.with_drafter({"kind": "model", "model": "qwen2.5-0.5b", "overlap": True})
    for n in (1, 8, 64, 256):
        for k in (1, 4, 8):
            verify = _verify_only(n, k)
            draft = _t(serial, n, k) - verify
            assert draft > 0
            assert _t(pearl, n, k) == pytest.approx(max(verify, draft), rel=1e-12)
            assert _t(pearl, n, k) < _t(serial, n, k)
        # no draft, no drafter time, either way: the same bits as the profile without a drafter
        assert _t(pearl, n, 0) == _t(serial, n, 0) == _verify_only(n, 0)


def test_layers_drafter_prices_each_draft_token_as_a_partial_forward() -> None:
    base = load_profile(BASE)
    shape = get_shape("qwen2.5-7b")
    for layers in (4, 14):
        prof = base.with_drafter({"kind": "layers", "layers": layers})
        cut = make_consts(dataclasses.replace(shape, n_layers=layers), base.device, 1,
                          DTYPE_BYTES["bfloat16"])
        for n, k in ((8, 3), (128, 5)):
            n_ = np.array([float(n)])
            one = forward_time(base.coefficients, cut, n_, n_, np.ones(1), n_ * 4096.0, np.array([4096.0]),
                               n_ * 4097.0)[0]
            assert _t(prof, n, k) - _verify_only(n, k) == pytest.approx(k * one, rel=1e-9)
    # fewer layers draft cheaper; a draft step is a fraction of a full decode (the LM head is shared)
    t4 = _t(base.with_drafter({"kind": "layers", "layers": 4}), 8, 4) - _verify_only(8, 4)
    t14 = _t(base.with_drafter({"kind": "layers", "layers": 14}), 8, 4) - _verify_only(8, 4)
    full = _verify_only(8, 0)
    assert t4 < t14 < 4 * full
    assert 4 / 28 < t4 / (4 * full) < 14 / 28


def test_parallel_drafter_runs_one_forward_whatever_the_draft_length() -> None:
    base = load_profile(BASE)
    par = base.with_drafter({"kind": "parallel", "model": "qwen2.5-0.5b"})
    seq = base.with_drafter({"kind": "model", "model": "qwen2.5-0.5b"})

    def draft_s(prof, n, k):
        return _t(prof, n, k) - _verify_only(n, k)

    # Memory-bound (small batch): one forward over k positions costs about the same for every k,
    # while a sequential draft model pays k forwards.
    d1, d8 = draft_s(par, 8, 1), draft_s(par, 8, 8)
    assert d8 == pytest.approx(d1, rel=0.05)
    assert draft_s(seq, 8, 8) == pytest.approx(8 * draft_s(seq, 8, 1), rel=1e-9)
    assert draft_s(seq, 8, 8) > 5 * d8
    # A fixed block: exactly the same cost for every draft length; denoise_steps forwards.
    blk = base.with_drafter({"kind": "parallel", "model": "qwen2.5-0.5b", "block": 8})
    assert draft_s(blk, 64, 2) == pytest.approx(draft_s(blk, 64, 7), rel=1e-9)
    two = base.with_drafter({"kind": "parallel", "model": "qwen2.5-0.5b", "block": 8, "denoise_steps": 2})
    assert draft_s(two, 64, 3) == pytest.approx(2 * draft_s(blk, 64, 3), rel=1e-9)
    # Without a KV cache the diffusion drafter re-reads the whole context: far dearer at 4k tokens.
    nocache = base.with_drafter({"kind": "parallel", "model": "qwen2.5-0.5b", "kv_cache": False})
    assert draft_s(nocache, 8, 4) > 5 * draft_s(par, 8, 4)
    assert _t(par, 8, 0) == _verify_only(8, 0)


def test_drafter_specs_are_validated() -> None:
    base = load_profile(BASE)
    bad = [({"kind": "layers", "layers": 28}, "drafter.layers"),
           ({"kind": "layers", "layers": 0}, "drafter.layers"),
           ({"kind": "layers"}, "drafter.layers"),
           ({"kind": "parallel", "model": "nope"}, "drafter.model"),
           ({"kind": "parallel", "model": "qwen2.5-0.5b", "steps": 2}, "drafter.steps"),
           ({"kind": "parallel", "model": "qwen2.5-0.5b", "denoise_steps": 0}, "drafter.denoise_steps"),
           ({"kind": "model", "model": "qwen2.5-0.5b", "overlap": "yes"}, "drafter.overlap"),
           ({"kind": "suffix", "per_token_s": -1.0}, "drafter.per_token_s")]
    for spec, field in bad:
        with pytest.raises(SpecrollError) as exc:
            base.with_drafter(spec, file="sim.toml")
        assert exc.value.field == field and exc.value.file == "sim.toml", spec


def test_new_drafter_kinds_survive_json_and_old_profiles_load_unchanged(tmp_path) -> None:
    base = load_profile(BASE)
    for spec in ({"kind": "layers", "layers": 8, "overlap": False},
                 {"kind": "parallel", "model": "qwen2.5-0.5b", "block": 6, "kv_cache": True},
                 {"kind": "model", "model": "qwen2.5-0.5b", "overlap": True}):
        prof = base.with_drafter(spec)
        path = prof.save(tmp_path / "p.json")
        again = load_profile(str(path))
        assert again.drafter == spec
        b = _batch(32, 5)
        assert np.array_equal(again.iteration_time(b), prof.iteration_time(b))
    # A profile written before these kinds existed (no overlap key, a model-free drafter) prices as before.
    d = json.loads(json.dumps(base.to_dict()))
    d["drafter"] = {"kind": "suffix", "per_request_s": 1e-5, "per_token_s": 4e-7}
    old = CostProfile.from_dict(d)
    b = _batch(16, 4)
    assert old.iteration_time(b)[0] == pytest.approx(_t(base, 16, 4) + 16 * 1e-5 + 64 * 4e-7, rel=1e-12)
