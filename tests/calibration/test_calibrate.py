"""The measurement harness and `specroll calibrate`, against a fake TimingStep with known physics."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

import specroll.calibration._calibrate as cal_mod
from specroll.calibration import CostProfile, IterationBatch, get_shape, load_profile
from specroll.calibration._costmodel import forward_time, make_consts
from specroll.calibration._devices import DeviceSpec
from specroll.calibration._measure import (
    CPU_GRID,
    CUDA_GRID,
    CUDA_QUICK,
    build_grid,
    datasheet_for_cuda_name,
    measure_peaks,
)
from specroll.cli import main

TRUE = {"t_fixed": 2e-3, "t_request": 1e-4, "t_token": 2e-5, "e_bw": 0.5, "e_f": 0.3, "e_attn": 0.08,
        "p": 2.5, "a": 0.4, "b": 0.8}
FAKE_CPU = DeviceSpec("cpu", "cpu", 2e11, 15e9, 16e9, 0.0, 0.0, "test double")


class FakeStep:
    """Times a batch with the cost model itself plus 1 % multiplicative noise; counts calls."""

    def __init__(self, model: str, device: str, dtype: str, max_batch: int, max_ctx: int,
                 random_weights: bool, temperature: float | None = None, mode: str = "engine") -> None:
        self.shape = get_shape(model)
        self.temperature, self.mode = temperature, mode
        self.max_batch, self.max_ctx = max_batch, max_ctx
        self.consts = make_consts(self.shape, FAKE_CPU, 1, 4.0)
        self.rng = np.random.default_rng(0)
        self.calls = 0

    def run(self, q_lens: Sequence[int], ctx_lens: Sequence[int]) -> float:
        assert len(q_lens) == len(ctx_lens) <= self.max_batch
        assert max(q + c for q, c in zip(q_lens, ctx_lens)) <= self.max_ctx
        self.calls += 1
        b = IterationBatch.from_requests(np.array(q_lens), np.array(ctx_lens))
        t = forward_time(TRUE, self.consts, b.n, b.q_sum, b.q_max, b.c_sum, b.c_max, b.qc_sum)[0]
        return float(t * np.exp(self.rng.normal(0, 0.01)))


@pytest.fixture
def fake_backend(monkeypatch):
    monkeypatch.setattr(cal_mod, "measure_peaks", lambda device, dtype: FAKE_CPU)


def test_grid_covers_regimes_and_respects_limits() -> None:
    grid = build_grid(CPU_GRID, max_batch=8, max_ctx=600, seed=0)
    kinds = {p.kind for p in grid}
    assert kinds == {"uniform", "skewed", "mixed_q", "prefill"}
    assert all(len(p.q_lens) <= 8 and max(q + c for q, c in zip(p.q_lens, p.ctx_lens)) <= 600 for p in grid)
    skewed = [p for p in grid if p.kind == "skewed"]
    assert all(max(p.ctx_lens) > 1.5 * np.mean(p.ctx_lens) for p in skewed if len(p.ctx_lens) >= 4)
    assert build_grid(CPU_GRID, 8, 600, seed=0) == grid  # seeded
    assert build_grid(CPU_GRID, 8, 600, seed=1) != grid


def test_cuda_path_on_cpu_shapes() -> None:
    assert datasheet_for_cuda_name("NVIDIA H100 80GB HBM3").name == "h100-sxm"
    assert datasheet_for_cuda_name("NVIDIA A100-SXM4-80GB").name == "a100-80gb"
    assert datasheet_for_cuda_name("NVIDIA GeForce RTX 4090") is None
    for spec in (CUDA_GRID, CUDA_QUICK):
        grid = build_grid(spec, max_batch=256, max_ctx=8192 + 16, seed=0)
        assert len(grid) >= 15 and max(len(p.q_lens) for p in grid) <= 256


def test_measure_peaks_cpu_is_sane() -> None:
    spec = measure_peaks("cpu", "float32")
    assert spec.kind == "cpu" and 1e9 < spec.peak_flops < 1e14 and 1e8 < spec.mem_bw < 1e12
    assert spec.memory_bytes > 1e8 and "measured" in spec.source


def test_calibrate_harness_fits_the_fake(fake_backend) -> None:
    cal = cal_mod.calibrate("smollm2-135m", "cpu", quick=False, seed=0, step_factory=FakeStep)
    prof = cal.profile
    assert prof.kind == "measured" and prof.model == "smollm2-135m" and prof.dtype == "float32"
    assert prof.heldout_mape < 0.03 and prof.extra["baseline"]["heldout_mape"] > 2 * prof.heldout_mape
    assert {"decode", "verify", "prefill", "skewed_ctx"} <= set(prof.extra["heldout_by_regime"])
    assert prof.ranges["n"] == [1.0, 16.0] and prof.ranges["c_max"][0] == 0.0
    assert sum(r["heldout"] for r in cal.rows) == prof.extra["n_heldout"]
    # A profile round-trips through JSON and validation.
    back = CostProfile.from_dict(json.loads(json.dumps(prof.to_dict())))
    b = IterationBatch.from_requests(np.array([1, 3]), np.array([100, 900]))
    assert back.iteration_time(b)[0] == prof.iteration_time(b)[0]


def test_cli_calibrate_writes_files_and_refit_is_reproducible(fake_backend, tmp_path, capsys) -> None:
    out = tmp_path / "prof.json"
    argv = ["calibrate", "--model", "qwen2.5-0.5b", "--random-weights", "--quick", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "held-out MAPE" in text and "decode" in text
    meas = tmp_path / "prof.measurements.parquet"
    assert out.is_file() and meas.is_file() and (tmp_path / "prof.fit.png").stat().st_size > 1000
    prof = load_profile(out, expect_model="qwen2.5-0.5b")
    assert prof.extra["random_weights"] is True and prof.extra["quick"] is True
    r1, r2 = tmp_path / "r1.json", tmp_path / "r2.json"
    assert main(["calibrate", "--refit", str(meas), "--seed", "3", "--out", str(r1)]) == 0
    assert main(["calibrate", "--refit", str(meas), "--seed", "3", "--out", str(r2)]) == 0
    assert r1.read_bytes() == r2.read_bytes()
    m1, m2 = tmp_path / "r1.measurements.parquet", tmp_path / "r2.measurements.parquet"
    assert m1.read_bytes() == m2.read_bytes()


def test_cli_bad_inputs_exit_2_without_files(fake_backend, tmp_path, capsys) -> None:
    assert main(["calibrate", "--out", str(tmp_path / "p.txt")]) == 2
    missing = str(tmp_path / "missing.parquet")
    assert main(["calibrate", "--refit", missing, "--out", str(tmp_path / "p.json")]) == 2
    assert main(["calibrate", "--device", "tpu", "--out", str(tmp_path / "p.json")]) == 2
    assert main(["calibrate", "--max-batch", "0", "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("specroll: error:") == 4
    assert list(tmp_path.iterdir()) == []


def test_cli_show_builtin(capsys) -> None:
    assert main(["calibrate", "--show", "h100-sxm:qwen2.5-7b:tp2"]) == 0
    assert "datasheet" in capsys.readouterr().out


class ListDrafter:
    """A test double with the Drafter interface: proposes the continuation of the first rollout."""

    name = "list"
    kmax = 8

    def __init__(self) -> None:
        self.hist: dict[int, np.ndarray] = {}
        self.out: dict[int, list[int]] = {}
        self.pid: dict[int, int] = {}

    def start_step(self, step: int) -> None:
        pass

    def add_rollout(self, step, prompt_id, prompt_tokens, response_tokens) -> None:
        self.hist.setdefault(prompt_id, np.asarray(response_tokens))

    def begin(self, rid, prompt_id, prompt_tokens) -> None:
        self.out[rid], self.pid[rid] = [], prompt_id

    def extend(self, rid, tokens) -> None:
        self.out[rid].extend(int(t) for t in tokens)

    def propose(self, rid):
        h, o = self.hist[self.pid[rid]], self.out[rid]
        k = len(o)
        if k and k <= len(h) and list(h[:k][-3:]) == o[-3:]:
            prop = h[k:k + self.kmax]
        else:
            prop = h[:0]
        return prop.astype(np.int64), np.ones(len(prop), dtype=np.float32)

    def end(self, rid) -> None:
        del self.out[rid]


def test_drafter_cost_measured_and_charged_only_when_drafting() -> None:
    from specroll.calibration._drafter_cost import measure_drafter_cost

    cost = measure_drafter_cost(ListDrafter(), n_prompts=4, samples=2, length=128)
    assert cost["calls"] > 100 and 0 < cost["mean_proposal"] <= 8
    assert cost["per_request_s"] >= 0 and cost["per_token_s"] >= 0
    assert cost["per_request_s"] + cost["per_token_s"] > 0
    d = load_profile("h100-sxm:qwen2.5-7b").to_dict()
    d["drafter"] = {"kind": "suffix", "per_request_s": 1e-5, "per_token_s": 1e-6}
    prof = CostProfile.from_dict(d)
    q, c = np.array([1.0, 1.0]), np.array([100.0, 200.0])
    plain = prof.iteration_time(IterationBatch.from_requests(q, c))[0]
    drafting = prof.iteration_time(IterationBatch.from_requests(q, c, draft=np.array([3.0, 0.0])))[0]
    assert drafting - plain == pytest.approx(2 * 1e-5 + 3 * 1e-6)


@pytest.mark.slow
def test_real_timing_step_quick_calibration(tmp_path) -> None:
    """End to end on the real backend's timing step (random SmolLM2-shaped weights, quick grid)."""
    pytest.importorskip("torch")
    out = tmp_path / "cpu.json"
    argv = ["calibrate", "--model", "smollm2-135m", "--random-weights", "--quick", "--out", str(out)]
    assert main(argv) == 0
    prof = load_profile(out, expect_model="smollm2-135m")
    assert prof.kind == "measured" and prof.heldout_mape is not None
    b = IterationBatch.from_requests(np.ones(4), np.full(4, 100.0))
    assert prof.iteration_time(b)[0] > 0
