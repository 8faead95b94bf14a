"""The synthetic presets' measured statistics (traces/README.md's table).

    python benchmarks/bench_presets.py --out docs/results/presets.json

For each preset: `specroll trace synth --preset P --prompts 2000 --steps 8 --seed 1` (its own samples
per prompt), then `trace_stats`. Prints one table and writes the JSON.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # the benchmarks package; specroll comes from the install
from benchmarks._meta import finish, run_meta  # noqa: E402

PRESETS = ("math-16k", "code-8k", "reasoning-32k", "servegen-r1", "tiny")
KEYS = ("p50", "p90", "p99", "p99_over_p50", "clip_ratio", "top5_token_share", "top10_token_share",
        "within_group_icc", "rank_mover_fraction", "rank_corr", "mean_len_first_step", "mean_len_last_step")


SCALE = ["trace", "synth", "--preset", "math-16k", "--prompts", "6250", "--samples", "16", "--steps", "10",
         "--seed", "1"]


def _scale_run() -> dict:
    """1,000,000 rollouts of math-16k in a child process: its wall time and peak memory."""
    import resource
    import subprocess
    import time

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "specroll", *SCALE, "--out", str(Path(tmp) / "big.parquet")]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"command": "specroll " + " ".join(SCALE) + " --out big.parquet", "rollouts": 1_000_000,
            "wall_s": wall, "max_rss_mb": rss_kb / 1024}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON to write")
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    meta = run_meta()
    from specroll.core.fileio import write_json
    from specroll.traces import get_preset, read_trace, synthesize_to_file, trace_stats

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in PRESETS:
            path = Path(tmp) / f"{name}.parquet"
            synthesize_to_file(path, name, args.prompts, None, args.steps, args.seed)
            st = trace_stats(read_trace(path, columns=[]))
            rows.append({"preset": name, "cap": get_preset(name).max_response_len,
                         **{k: st[k] for k in KEYS}})
            print(f"{name:<14} " + " ".join(f"{k}={rows[-1].get(k)}" for k in ("p50", "p99", "clip_ratio")),
                  flush=True)
    scale = _scale_run()
    print(f"1,000,000 rollouts: {scale['wall_s']:.2f} s wall, {scale['max_rss_mb']:.0f} MB max RSS")
    write_json(args.out, {"meta": finish(meta), "prompts": args.prompts, "steps": args.steps,
                          "seed": args.seed, "rows": rows, "scale": scale})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
