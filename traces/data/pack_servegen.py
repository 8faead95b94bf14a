"""Pack ServeGen's DeepSeek-R1 distributions into the small files that ship with specroll.

    python traces/data/pack_servegen.py ../shared/data/servegen-deepseek-r1

Pools every client's per-window PMFs weighted by the window's request count (exactly what
``specroll.traces.load_servegen_pmf(DIR)`` does on the raw data) and writes, for output and input
tokens, ``servegen-r1-FIELD.csv.gz`` (tokens,probability; probabilities as exact float reprs) beside
this script. The raw data (13 MB) stays outside the package; these are ~0.3 MB.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

from specroll.traces import load_servegen_pmf

HERE = Path(__file__).resolve().parent


def main(raw_dir: str) -> None:
    for field in ("output_tokens", "input_tokens"):
        pmf = load_servegen_pmf(raw_dir, field)
        path = HERE / f"servegen-r1-{field.split('_')[0]}.csv.gz"
        lines = ["tokens,probability"] + [f"{int(v)},{float(p)!r}" for v, p in zip(pmf.values, pmf.probs)]
        # mtime=0: the same data gives the same bytes
        path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
        print(f"wrote {path} ({path.stat().st_size:,} bytes, {len(pmf.values):,} values)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/servegen-deepseek-r1")
