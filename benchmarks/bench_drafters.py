"""Drafter CPU cost: our suffix drafter (pure Python) against arctic-inference's C++ suffix tree.

The same history and the same requests go through both: ``--rollouts`` earlier rollouts of one
prompt (the history), then ``--requests`` new rollouts of it, each fed one token at a time with a
proposal asked at every position (what `specroll trace match` does; the engine asks less often).
Printed per drafter: history insert (us per token: ours = add_rollout + building the prompt's
index, arctic = start_request + add_active_response + stop_request), own-text insert (us per
extend/add_active_response of one token), speculate (us per propose/speculate call: mean and
median), mean proposal length and mean match length (tokens of the proposal that equal the actual
continuation), so the two do comparable work. Every scenario runs ``--repeats`` times from
scratch; each call's time is the fastest of its repeats (robust to a busy shared machine).
Scenarios: history; own text only (step 0: no history); history with requests that fall into a
17-token loop for their second half (long suffix-link chains).

Same parameters on both sides: tree depth 24, max 8 tokens, min token prob 0.1, spec factor 1.0.
Arctic runs in its own virtual environment (never a project dependency), in a subprocess:

    .venv/bin/python benchmarks/bench_drafters.py [--arctic-python /work/arctic-venv/bin/python]
        [--rollouts 16] [--min-len 300] [--max-len 2000] [--requests 4] [--trace t.parquet]

Token streams: synthetic by default (each rollout is a noisy copy of a per-prompt "solution":
runs of it, substitutions, skips and repeated phrases from a Zipf vocabulary, so rollouts share
long runs but diverge, as samples of one prompt do), or the responses of the prompt with the most
rollouts in ``--trace`` (a trace with token ids, e.g. from `specroll rollout`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

DEPTH, KMAX, MIN_PROB, FACTOR = 24, 8, 0.1, 1.0


def synthetic(rng: np.random.Generator, n: int, lo: int, hi: int, vocab: int = 32000
              ) -> tuple[np.ndarray, list[np.ndarray]]:
    """A prompt and ``n`` responses: noisy copies of one solution (Zipf tokens)."""
    zipf = np.minimum(rng.zipf(1.2, 200_000), vocab - 1)
    solution = zipf[:hi * 2].copy()
    phrases = [zipf[i:i + int(rng.integers(3, 12))] for i in rng.integers(0, 100_000, 32)]
    out = []
    for _ in range(n):
        length = int(rng.integers(lo, hi + 1))
        parts, pos, total = [], 0, 0
        while total < length:
            r = rng.random()
            if r < 0.6:  # follow the solution for a while
                run = int(rng.geometric(1 / 8))
                parts.append(solution[pos:pos + run])
                pos += run
            elif r < 0.7:  # a repeated phrase
                parts.append(phrases[int(rng.integers(len(phrases)))])
            elif r < 0.95:  # a few fresh tokens, then resume near where the solution was
                parts.append(zipf[rng.integers(0, len(zipf), int(rng.integers(1, 5)))])
                pos += int(rng.integers(-4, 6))
            else:  # skip ahead in the solution
                pos += int(rng.integers(1, 20))
                continue
            pos = max(0, pos) % (len(solution) - 64)
            total += len(parts[-1])
        out.append(np.concatenate(parts)[:length].astype(np.int64))
    prompt = zipf[100_000:100_064].astype(np.int64)
    return prompt, out


def from_trace(path: str, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    from specroll.traces import read_trace
    tr = read_trace(path)
    pids = tr.column("prompt_id")
    pid = np.bincount(pids - pids.min()).argmax() + pids.min()
    rows = np.flatnonzero(pids == pid)
    tv, toff = tr.ragged("token_ids")
    pv, poff = tr.ragged("prompt_token_ids")
    resps = [np.asarray(tv[toff[r]:toff[r + 1]], dtype=np.int64) for r in rows]
    return np.asarray(pv[poff[rows[0]]:poff[rows[0] + 1]], dtype=np.int64), resps[:n]


def _stats(secs: list[float]) -> tuple[float, float]:
    return 1e6 * float(np.mean(secs)), 1e6 * float(np.median(secs))


def _best_of(runs: list[dict]) -> dict:
    """Per call, the fastest of the repeats (each repeat does identical work from scratch), so a
    scheduler hiccup on a shared machine does not land in the mean; then mean and median."""
    out = dict(runs[0])
    out["insert_us"] = min(r["insert_us"] for r in runs)
    for key in ("extend", "speculate"):
        fastest = np.min(np.array([r[key] for r in runs]), axis=0)
        out[f"{key}_us"] = _stats(fastest.tolist())
        del out[key]
    return out


def _match(prop: list[int], actual: np.ndarray, t: int) -> int:
    m = 0
    for a in prop:
        if t + m >= len(actual) or int(actual[t + m]) != a:
            break
        m += 1
    return m


def run_ours(prompt: np.ndarray, history: list[np.ndarray], requests: list[np.ndarray], repeats: int
             ) -> dict:
    return _best_of([_ours_once(prompt, history, requests) for _ in range(repeats)])


def _ours_once(prompt: np.ndarray, history: list[np.ndarray], requests: list[np.ndarray]) -> dict:
    from specroll.policies import make_drafter
    d = make_drafter("suffix", depth=DEPTH, kmax=KMAX, min_prob=MIN_PROB, spec_factor=FACTOR)
    d.start_step(0)
    t0 = time.perf_counter()
    for resp in history:
        d.add_rollout(0, 0, prompt, resp)
    d.start_step(1)
    d.history_index(0)  # built here so the insert time includes it (begin would build it)
    insert = (time.perf_counter() - t0) / max(1, sum(len(r) for r in history))
    ext, spec, plen, mlen = [], [], [], []
    for i, y in enumerate(requests):
        d.begin(100 + i, 0, prompt)
        for t in range(len(y)):
            t0 = time.perf_counter()
            toks, _ = d.propose(100 + i)
            spec.append(time.perf_counter() - t0)
            plen.append(len(toks))
            mlen.append(_match(toks.tolist(), y, t))
            tok = y[t:t + 1]
            t0 = time.perf_counter()
            d.extend(100 + i, tok)
            ext.append(time.perf_counter() - t0)
        d.end(100 + i)
    return {"insert_us": insert * 1e6, "extend": ext, "speculate": spec,
            "proposal": float(np.mean(plen)), "match": float(np.mean(mlen))}


def run_arctic(prompt: np.ndarray, history: list[np.ndarray], requests: list[np.ndarray], repeats: int
               ) -> dict:
    """Runs inside the arctic virtual environment (see the module docstring)."""
    return _best_of([_arctic_once(prompt, history, requests) for _ in range(repeats)])


def _arctic_once(prompt: np.ndarray, history: list[np.ndarray], requests: list[np.ndarray]) -> dict:
    from arctic_inference.suffix_decoding import SuffixDecodingCache
    c = SuffixDecodingCache(max_tree_depth=DEPTH)
    p32 = np.ascontiguousarray(prompt, dtype=np.int32)
    t0 = time.perf_counter()
    for i, resp in enumerate(history):
        c.start_request(i, p32)
        c.add_active_response(i, np.ascontiguousarray(resp, dtype=np.int32))
        c.stop_request(i)
    insert = (time.perf_counter() - t0) / max(1, sum(len(r) for r in history))
    ext, spec, plen, mlen = [], [], [], []
    for i, y in enumerate(requests):
        rid = 100 + i
        full = np.ascontiguousarray(np.concatenate([prompt, y]), dtype=np.int32)
        c.start_request(rid, p32)
        for t in range(len(y)):
            ctx = full[:len(prompt) + t]
            t0 = time.perf_counter()
            draft = c.speculate(rid, ctx, max_spec_tokens=KMAX, max_spec_factor=FACTOR,
                                min_token_prob=MIN_PROB)
            spec.append(time.perf_counter() - t0)
            plen.append(len(draft.token_ids))
            mlen.append(_match(list(draft.token_ids), y, t))
            tok = full[len(prompt) + t:len(prompt) + t + 1]
            t0 = time.perf_counter()
            c.add_active_response(rid, tok)
            ext.append(time.perf_counter() - t0)
        c.stop_request(rid)
        # Like ours, a request must not see the benchmark's earlier requests: history only.
        c.evict_cached_response(rid)
    return {"insert_us": insert * 1e6, "extend": ext, "speculate": spec,
            "proposal": float(np.mean(plen)), "match": float(np.mean(mlen))}


def _load(path: str) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], int]:
    z = np.load(path)
    def series(prefix: str) -> list[np.ndarray]:
        keys = [k for k in z.files if k[0] == prefix and k[1:].isdigit()]
        return [z[k] for k in sorted(keys, key=lambda k: int(k[1:]))]

    hist, reqs = series("h"), series("r")
    return z["prompt"], hist, reqs, int(z["repeats"])


def looping(rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
    """The first half of ``y``, then one of its phrases repeated to the same length: the
    degenerate loops small models fall into before the length cap (long suffix-link chains)."""
    half = len(y) // 2
    start = int(rng.integers(0, half - 17))
    loop = np.tile(y[start:start + 17], len(y) // 17 + 1)
    return np.concatenate([y[:half], loop[:len(y) - half]])


def _arctic(python: str, prompt: np.ndarray, history: list[np.ndarray], requests: list[np.ndarray],
            repeats: int) -> tuple[dict | None, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "work.npz")
        np.savez(path, prompt=prompt, repeats=repeats, **{f"h{i}": h for i, h in enumerate(history)},
                 **{f"r{i}": r for i, r in enumerate(requests)})
        proc = subprocess.run([python, __file__, "--arctic-worker", path], capture_output=True, text=True)
    if proc.returncode != 0:
        return None, f"arctic-inference did not run ({proc.stderr.strip().splitlines()[-1:]}): ours only"
    return json.loads(proc.stdout.strip().splitlines()[-1]), ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rollouts", type=int, default=16, help="history rollouts of the prompt")
    ap.add_argument("--requests", type=int, default=4, help="new rollouts drafted token by token")
    ap.add_argument("--min-len", type=int, default=300)
    ap.add_argument("--max-len", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each scenario; per call the fastest")
    ap.add_argument("--trace", default=None, help="take the token streams from this trace instead")
    ap.add_argument("--arctic-python",
                    default=os.environ.get("ARCTIC_PYTHON", "/work/arctic-venv/bin/python"))
    ap.add_argument("--arctic-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arctic_worker:  # inside the arctic venv: read the workload, print the result
        print(json.dumps(run_arctic(*_load(args.arctic_worker))))
        return
    rng = np.random.default_rng(args.seed)
    if args.trace:
        prompt, resps = from_trace(args.trace, args.rollouts + args.requests)
        history, requests = resps[:-args.requests], resps[-args.requests:]
    else:
        prompt, resps = synthetic(rng, args.rollouts + args.requests, args.min_len, args.max_len)
        history, requests = resps[:args.rollouts], resps[args.rollouts:]
    scenarios = [("history", history, requests), ("own text only", [], requests),
                 ("history, looping", history, [looping(rng, y) for y in requests])]
    arctic = Path(args.arctic_python).exists()
    note = "" if arctic else f"no arctic-inference interpreter at {args.arctic_python}: ours only"
    n_hist, n_req = sum(map(len, history)), sum(map(len, requests))
    print(f"history: {len(history)} rollouts, {n_hist:,} tokens; requests: {len(requests)}, {n_req:,} "
          f"positions ({'trace ' + args.trace if args.trace else f'synthetic, seed {args.seed}'}); "
          f"depth {DEPTH}, kmax {KMAX}, min_prob {MIN_PROB}, spec_factor {FACTOR}; per call the fastest "
          f"of {args.repeats} repeats")
    head = (f"{'scenario':<17} {'drafter':<11} {'insert us/tok':>13} {'extend us/tok':>13} "
            f"{'speculate us/call':>17} {'(median)':>8} {'proposal':>8} {'match':>6}")
    print(head)
    print("-" * len(head))
    for name, hist, reqs in scenarios:
        rows = {"ours": run_ours(prompt, hist, reqs, args.repeats)}
        if arctic:
            got, note = _arctic(args.arctic_python, prompt, hist, reqs, args.repeats)
            if got is not None:
                rows["arctic"] = got
            else:
                arctic = False
        for who, r in rows.items():
            ins = f"{r['insert_us']:.2f}" if hist else "-"
            print(f"{name:<17} {who:<11} {ins:>13} {r['extend_us'][0]:>13.2f} {r['speculate_us'][0]:>17.2f} "
                  f"{r['speculate_us'][1]:>8.2f} {r['proposal']:>8.2f} {r['match']:>6.2f}")
        if len(rows) == 2:
            o, a = rows["ours"]["speculate_us"], rows["arctic"]["speculate_us"]
            print(f"{'':<17} {'ours/arctic':<11} {'':>13} {'':>13} {o[0] / a[0]:>16.2f}x "
                  f"{o[1] / a[1]:>7.2f}x")
    if note:
        print(note)


if __name__ == "__main__":
    main()
