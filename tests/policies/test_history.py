import numpy as np
import pytest

from specroll.core.errors import SpecrollError
from specroll.policies import LONG, MEDIUM, SHORT, LengthHistory, length_class


def test_predict_means_the_window_and_is_nan_without_history():
    h = LengthHistory(window=2)
    h.record(0, 7, 100, True)
    h.record(np.array([1, 1, 1]), np.array([7, 7, 3]), np.array([200, 300, 50]),
             np.array([True, False, True]))
    h.record(2, 7, 1000, True)
    # step 2 sees steps 0 and 1: prompt 7 -> (100+200+300)/3, prompt 3 -> 50, prompt 9 -> nan
    p = h.predict(np.array([7, 3, 9]), 2)
    assert p[0] == pytest.approx(200.0) and p[1] == 50.0 and np.isnan(p[2])
    # step 3 sees steps 1 and 2 only (window 2)
    assert h.predict([7], 3)[0] == pytest.approx((200 + 300 + 1000) / 3)
    # the current step's own rollouts never leak into its prediction
    assert np.isnan(LengthHistory().predict([1], 0)).all()


def test_predict_matches_a_plain_loop_on_random_data():
    rng = np.random.default_rng(0)
    for stat, fn in (("mean", np.mean), ("max", np.max), ("median", np.median)):
        h = LengthHistory(window=3, stat=stat)
        rows = []
        for step in range(6):
            pid = rng.integers(0, 20, 50)
            ln = rng.integers(1, 500, 50)
            h.record(np.full(50, step), pid, ln, np.ones(50, bool))
            rows += list(zip([step] * 50, pid.tolist(), ln.tolist(), strict=True))
        q = np.arange(-2, 25)
        got = h.predict(q, 6)
        for i, p in enumerate(q):
            past = [ln for s, pp, ln in rows if pp == p and 3 <= s < 6]
            if past:
                assert got[i] == pytest.approx(fn(past)), (stat, p)
            else:
                assert np.isnan(got[i])


def test_bad_inputs_are_specroll_errors():
    with pytest.raises(SpecrollError, match="window"):
        LengthHistory(window=0)
    with pytest.raises(SpecrollError, match="same length"):
        LengthHistory().record(np.array([0, 0]), np.array([1]), np.array([3, 4]))
    with pytest.raises(SpecrollError, match=">= 0"):
        LengthHistory().record(0, 1, -5)


def test_length_class_uses_prediction_partial_length_and_cap():
    pred = np.array([900.0, 300.0, 50.0, 50.0, np.nan, np.nan])
    gen = np.array([10, 10, 10, 600, 10, 700])
    c = length_class(pred, gen, 1000)
    assert c.tolist() == [LONG, MEDIUM, SHORT, LONG, MEDIUM, LONG]
