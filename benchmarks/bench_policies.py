"""Cost of one decide() per policy family for a whole cluster (64 engines x 128 requests).

The simulator calls decide() once per kernel iteration for every engine at once, so this is
the per-iteration policy overhead. Prints a table: family, microseconds per call (median of
repeats), with and without a confidence signal (conf gathered outside the timing).

    .venv/bin/python benchmarks/bench_policies.py [--engines 64] [--batch 128] [--kmax 16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from specroll.policies import POLICIES, Feedback, PolicyState, make_policy


def cluster_state(rng: np.random.Generator, engines: int, batch: int, kmax: int, conf: bool) -> PolicyState:
    engine = np.repeat(np.arange(engines), batch).astype(np.int32)
    n = engine.size
    drafted = rng.integers(0, kmax + 1, n).astype(np.int32)
    c = None
    if conf:
        c = np.cumprod(rng.uniform(0.6, 1.0, (n, kmax)), axis=1).astype(np.float32)
        c[np.arange(kmax)[None, :] >= rng.integers(0, kmax + 1, n)[:, None]] = 0.0
    s = PolicyState(
        engine=engine, request=np.arange(n), generated=rng.integers(0, 8000, n),
        prompt_len=rng.integers(50, 500, n), predicted_len=rng.uniform(100, 16000, n),
        last_drafted=drafted, last_accepted=(drafted * rng.random(n)).astype(np.int32),
        accept_ema=rng.random(n), batch_size=np.full(engines, batch, np.int32),
        kv_used=rng.random(engines), iteration=np.zeros(engines, np.int64),
        last_iter_time=np.full(engines, 0.02), kmax=kmax, max_len=16384,
        match_len=rng.integers(0, kmax + 1, n),
    )
    if c is not None:
        s._conf = c  # materialized up front: time the decision, not the gather
    return s


def time_decide(name: str, state: PolicyState, repeats: int) -> float:
    p = make_policy(name)
    p.reset(state.n_engines)
    fb = Feedback(k=np.zeros(state.n, np.int32), accepted=np.zeros(state.n, np.int32),
                  iter_time=np.full(state.n_engines, 0.02))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        k = p.decide(state)
        times.append(time.perf_counter() - t0)
        p.observe(state, fb)
    assert k.shape == (state.n,)
    return float(np.median(times)) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--kmax", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    plain = cluster_state(rng, a.engines, a.batch, a.kmax, conf=False)
    conf = cluster_state(rng, a.engines, a.batch, a.kmax, conf=True)
    print(f"decide() cost, {a.engines} engines x {a.batch} requests, kmax {a.kmax} (median of {a.repeats})")
    print(f"{'policy':<10} {'no conf (us)':>13} {'conf (us)':>10}")
    for name in sorted(POLICIES.names()):
        plain_us = time_decide(name, plain, a.repeats)
        conf_us = time_decide(name, conf, a.repeats)
        print(f"{name:<10} {plain_us:>13.0f} {conf_us:>10.0f}")


if __name__ == "__main__":
    main()
