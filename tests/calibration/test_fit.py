"""The fitter recovers known coefficients from synthetic measurements and reports held-out error."""

from __future__ import annotations

import numpy as np
import pytest

from specroll.calibration import IterationBatch, get_shape
from specroll.calibration._costmodel import forward_time, make_consts
from specroll.calibration._devices import DeviceSpec
from specroll.calibration._fit import FEATURES, fit_profile_coefficients

TRUE = {"t_fixed": 3e-3, "t_request": 2e-4, "t_token": 5e-5, "e_bw": 0.6, "e_f": 0.25, "e_attn": 0.05,
        "p": 3.0, "a": 0.3, "b": 0.7}
CPU = DeviceSpec("cpu", "cpu", 1e12, 20e9, 16e9, 0.0, 0.0)


def synthetic_grid(seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Uniform, skewed-context and mixed-query batches, plus prefills: what calibrate measures."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in (1, 2, 4, 8, 16):
        for q in (1, 2, 4, 8):
            rows += [(np.full(n, q), np.full(n, c)) for c in (16, 128, 512, 1024)]
            rows.append((np.full(n, q), rng.integers(8, 1024, n)))
            rows.append((rng.integers(1, 9, n), np.full(n, 256)))
    rows += [(np.full(n, L), np.zeros(n)) for L in (16, 64, 128) for n in (1, 4)]
    return rows


def features(rows) -> dict[str, np.ndarray]:
    batches = [IterationBatch.from_requests(q, c) for q, c in rows]
    return {f: np.array([getattr(b, f)[0] for b in batches]) for f in FEATURES}


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_fit_recovers_known_coefficients(noise: float) -> None:
    consts = make_consts(get_shape("smollm2-135m"), CPU, 1, 4.0)
    X = features(synthetic_grid())
    rng = np.random.default_rng(2)
    # prefills (no cached context) sample one position per prompt, as the engine does
    t = forward_time(TRUE, consts, *(X[f] for f in FEATURES), prefill=X["c_sum"] == 0) * np.exp(
        rng.normal(0, noise, len(X["n"])))
    res = fit_profile_coefficients(X, t, consts, seed=0)
    tol = 0.02 if noise == 0 else 0.15
    for name in ("t_fixed", "e_bw", "e_f", "e_attn", "p", "a", "b"):
        assert res.coefficients[name] == pytest.approx(TRUE[name], rel=tol, abs=0.02 * (name in "ab")), name
    assert res.n_test == round(0.2 * len(X["n"])) and res.n_train + res.n_test == len(X["n"])
    assert res.heldout_mape < max(3 * noise, 1e-3)
    # The physical form beats the DAS-style line by a wide margin on the same split.
    assert res.baseline["heldout_mape"] > 3 * res.heldout_mape
    assert {"decode", "verify", "prefill", "small_batch", "large_batch"} <= set(res.heldout_by_regime)


def test_fit_is_deterministic() -> None:
    consts = make_consts(get_shape("smollm2-135m"), CPU, 1, 4.0)
    X = features(synthetic_grid())
    t = forward_time(TRUE, consts, *(X[f] for f in FEATURES), prefill=X["c_sum"] == 0) * np.exp(
        np.random.default_rng(3).normal(0, 0.02, len(X["n"])))
    a = fit_profile_coefficients(X, t, consts, seed=5)
    b = fit_profile_coefficients(X, t, consts, seed=5)
    assert a.coefficients == b.coefficients and a.heldout_mape == b.heldout_mape
    assert (a.test_mask == b.test_mask).all()


def test_t_token_prices_sampled_positions_one_per_prompt_in_a_prefill() -> None:
    consts = make_consts(get_shape("smollm2-135m"), CPU, 1, 4.0)
    coef = {**TRUE, "t_token": 1e-3}
    X = features([(np.full(4, 64), np.zeros(4)), (np.full(4, 64), np.full(4, 10))])
    args = [X[f] for f in FEATURES]
    base = forward_time({**coef, "t_token": 0.0}, consts, *args, prefill=np.array([True, False]))
    with_tok = forward_time(coef, consts, *args, prefill=np.array([True, False]))
    q_tok = TRUE["b"] * X["q_sum"] + (1 - TRUE["b"]) * X["n"] * X["q_max"]
    # the prefill row pays for its 4 sampled positions, the verify row for all of its query tokens
    assert with_tok - base == pytest.approx([4e-3, 1e-3 * q_tok[1]])
