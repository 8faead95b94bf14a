import numpy as np
import pytest

from specroll.core.errors import SpecrollError
from specroll.policies import POLICIES, PolicyState, make_policy, policy_from_dict


def _state(n=3, kmax=8):
    return PolicyState(
        engine=np.zeros(n, np.int32), request=np.arange(n), generated=np.full(n, 10),
        prompt_len=np.full(n, 5), predicted_len=np.full(n, np.nan), last_drafted=np.zeros(n, np.int32),
        last_accepted=np.zeros(n, np.int32), accept_ema=np.full(n, np.nan),
        batch_size=np.array([n], np.int32), kv_used=np.zeros(1), iteration=np.zeros(1, np.int64),
        last_iter_time=np.zeros(1), kmax=kmax, max_len=100,
    )


def test_ar_never_drafts():
    assert make_policy("ar").decide(_state()).tolist() == [0, 0, 0]


def test_fixed_is_clipped_to_kmax():
    assert make_policy("fixed", k=20).decide(_state(kmax=8)).tolist() == [8, 8, 8]


def test_unknown_policy_and_param_are_clear():
    with pytest.raises(SpecrollError, match="unknown policy 'nope'.*Fix: use one of"):
        make_policy("nope")
    with pytest.raises(SpecrollError, match="no parameter 'kk'"):
        make_policy("fixed", kk=3)
    with pytest.raises(SpecrollError, match="k must be >= 0"):
        make_policy("fixed", k=-1)


def test_policy_dict_roundtrip():
    p = make_policy("fixed", k=3)
    q = policy_from_dict(p.to_dict())
    assert q.to_dict() == {"policy": "fixed", "params": {"k": 3}}
    assert "ar" in POLICIES


def test_draft_conf_without_signal_is_nan_and_full_length():
    s = _state(kmax=4)
    assert s.draft_conf.shape == (3, 4)
    assert s.draft_len.tolist() == [4, 4, 4]
