"""Fit the cost model to measured forward passes; report held-out error per regime.

The fit minimises the *relative* error (log residuals): a 1 ms decode and a 300 ms prefill
matter equally, and timing noise is multiplicative. A random 20 % of the measured grid points
never enter the fit; the profile reports its error on them. The DAS-style baseline
t = c_base + c_tok * n_tokens is fitted on the same split, for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from specroll.calibration._costmodel import COEF_BOUNDS, COEF_NAMES, Consts, forward_time

FEATURES: tuple[str, ...] = ("n", "q_sum", "q_max", "c_sum", "c_max", "qc_sum")
# Fitted in log space (they span decades), the rest linearly.
_LOG = ("e_bw", "e_f", "e_attn")
# Coefficients scaled to milliseconds inside the optimiser so that every variable is O(1).
_MS = ("t_fixed", "t_request", "t_token")


@dataclass
class FitResult:
    coefficients: dict[str, float]
    heldout_mape: float
    heldout_max_ape: float
    heldout_by_regime: dict[str, dict[str, float]]
    baseline: dict[str, Any]
    train_mape: float
    n_train: int
    n_test: int
    test_mask: np.ndarray = field(repr=False)
    predicted: np.ndarray = field(repr=False)


def regimes(n: np.ndarray, q_max: np.ndarray, c_sum: np.ndarray, c_max: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks: decode / verify / prefill, small / large batch, uniform / skewed contexts."""
    prefill = c_sum == 0
    decode = (q_max == 1) & ~prefill
    mean_c = np.divide(c_sum, n, out=np.zeros_like(c_sum, dtype=float), where=n > 0)
    skewed = c_max > 1.5 * np.maximum(mean_c, 1.0)
    small = n <= 4
    return {"decode": decode, "verify": ~decode & ~prefill, "prefill": prefill,
            "small_batch": small, "large_batch": ~small, "uniform_ctx": ~skewed & ~prefill,
            "skewed_ctx": skewed}


def _ape(pred: np.ndarray, meas: np.ndarray) -> np.ndarray:
    return np.abs(pred - meas) / meas


def _summary(ape: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    out = {}
    for name, m in masks.items():
        if m.any():
            out[name] = {"mape": float(ape[m].mean()), "max_ape": float(ape[m].max()), "count": int(m.sum())}
    return out


def _to_x(coef: dict[str, float]) -> np.ndarray:
    return np.array([np.log(coef[k]) if k in _LOG else coef[k] * 1e3 if k in _MS else coef[k]
                     for k in COEF_NAMES])


def _from_x(x: np.ndarray) -> dict[str, float]:
    return {k: float(np.exp(v)) if k in _LOG else float(v) * 1e-3 if k in _MS else float(v)
            for k, v in zip(COEF_NAMES, x)}


def _bounds() -> tuple[np.ndarray, np.ndarray]:
    lo, hi = [], []
    for k in COEF_NAMES:
        a, b = COEF_BOUNDS[k]
        if k in _LOG:
            a, b = np.log(a), np.log(b)
        elif k in _MS:
            a, b = a * 1e3, b * 1e3
        lo.append(a)
        hi.append(b)
    return np.array(lo), np.array(hi)


def _starts(fixed: dict[str, float]) -> list[dict[str, float]]:
    # A few starts over the shape parameters: the log-loss has shallow local minima in (p, a, b).
    out = []
    for p in (1.5, 6.0):
        for a in (0.2, 0.9):
            for b in (0.2, 0.9):
                c = {"t_fixed": 1e-3, "t_request": 1e-5, "t_token": 1e-6, "e_bw": 0.5, "e_f": 0.3,
                     "e_attn": 0.1, "p": p, "a": a, "b": b}
                c.update(fixed)
                out.append(c)
    return out


def fit_coefficients(X: dict[str, np.ndarray], t: np.ndarray, consts: Consts,
                     fixed: dict[str, float] | None = None) -> dict[str, float]:
    """Least-squares fit on log(t) within physical bounds; ``fixed`` pins some coefficients."""
    fixed = dict(fixed or {})
    free = [i for i, k in enumerate(COEF_NAMES) if k not in fixed]
    lo, hi = _bounds()
    log_t = np.log(t)

    def resid(xf: np.ndarray, base: np.ndarray) -> np.ndarray:
        x = base.copy()
        x[free] = xf
        pred = forward_time(_from_x(x), consts, *(X[f] for f in FEATURES), prefill=X["c_sum"] == 0)
        return np.log(np.maximum(pred, 1e-12)) - log_t

    best: tuple[float, np.ndarray] | None = None
    for start in _starts(fixed):
        x0 = np.clip(_to_x(start), lo + 1e-9, hi - 1e-9)
        sol = least_squares(resid, x0[free], args=(x0,), bounds=(lo[free], hi[free]), method="trf",
                            x_scale="jac", max_nfev=400)
        x = x0.copy()
        x[free] = sol.x
        if best is None or sol.cost < best[0]:
            best = (float(sol.cost), x)
    assert best is not None
    return _from_x(best[1])


def _fit_baseline(tokens: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """DAS-style t = c_base + c_tok * n_tokens, weighted least squares on relative error."""
    A = np.stack([np.ones_like(tokens), tokens], axis=1) / t[:, None]
    coef, *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    return float(coef[0]), float(coef[1])


def fit_profile_coefficients(X: dict[str, np.ndarray], t: np.ndarray, consts: Consts, *, seed: int = 0,
                             holdout: float = 0.2, fixed: dict[str, float] | None = None) -> FitResult:
    """Fit on a random (1 - holdout) of the rows; report error on the held-out rest."""
    X = {k: np.asarray(X[k], dtype=np.float64) for k in FEATURES}
    t = np.asarray(t, dtype=np.float64)
    rows = t.shape[0]
    rng = np.random.default_rng(seed)
    test = np.zeros(rows, dtype=bool)
    test[rng.permutation(rows)[: int(round(holdout * rows))]] = True
    train = ~test
    coef = fit_coefficients({k: v[train] for k, v in X.items()}, t[train], consts, fixed)
    pred = forward_time(coef, consts, *(X[f] for f in FEATURES), prefill=X["c_sum"] == 0)
    ape = _ape(pred, t)
    masks = regimes(X["n"], X["q_max"], X["c_sum"], X["c_max"])
    test_masks = {k: m & test for k, m in masks.items()}

    c_base, c_tok = _fit_baseline(X["q_sum"][train], t[train])
    base_ape = _ape(c_base + c_tok * X["q_sum"], t)
    baseline = {"form": "t = c_base + c_tok * n_tokens (DAS)", "c_base": c_base, "c_tok": c_tok,
                "heldout_mape": float(base_ape[test].mean()) if test.any() else None,
                "heldout_max_ape": float(base_ape[test].max()) if test.any() else None,
                "heldout_by_regime": _summary(base_ape, test_masks)}
    return FitResult(
        coefficients=coef,
        heldout_mape=float(ape[test].mean()) if test.any() else float("nan"),
        heldout_max_ape=float(ape[test].max()) if test.any() else float("nan"),
        heldout_by_regime=_summary(ape, test_masks),
        baseline=baseline,
        train_mape=float(ape[train].mean()),
        n_train=int(train.sum()),
        n_test=int(test.sum()),
        test_mask=test,
        predicted=pred,
    )
