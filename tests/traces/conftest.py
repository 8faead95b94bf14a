import numpy as np
import pytest

from specroll.traces import Trace, TraceMeta


def make_small_trace(n_prompts: int = 4, samples: int = 3, steps: int = 2, cap: int = 50,
                     tokens: bool = True, seed: int = 0) -> Trace:
    """A tiny valid trace with token ids, for schema tests."""
    rng = np.random.default_rng(seed)
    step, pid, smp = (a.ravel() for a in np.meshgrid(np.arange(steps), np.arange(n_prompts),
                                                   np.arange(samples), indexing="ij"))
    n = len(step)
    rlen = rng.integers(1, cap + 1, n)
    rlen[0] = cap
    plen = rng.integers(1, 10, n)
    cols = dict(step=step, prompt_id=pid + 100, sample=smp, prompt_len=plen, response_len=rlen,
                finished=rlen < cap)
    if tokens:
        cols["token_ids"] = [rng.integers(0, 1000, k) for k in rlen]
        cols["prompt_token_ids"] = [rng.integers(0, 1000, k) for k in plen]
    meta = TraceMeta(max_response_len=cap, source="test", model="m", temperature=0.7)
    return Trace.from_columns(meta, cols)


@pytest.fixture
def small_trace() -> Trace:
    return make_small_trace()
