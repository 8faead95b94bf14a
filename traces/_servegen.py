"""ServeGen importer: DeepSeek-R1 production output-length distributions -> RL-shaped traces.

ServeGen's raw data (github.com/alibaba/ServeGen, data/reason/deepseek-r1, Apache-2.0) holds, per
API client and 6-hour window, empirical PMFs stored as strings of Python dict literals (parsed
with ``ast.literal_eval``, never ``eval``), and per-client request rates. Pooling the windows
weighted by their request counts gives one output-length distribution. The pooled output and
input distributions ship with specroll (traces/data/, written by traces/data/pack_servegen.py
from the raw data), so `specroll trace import servegen` works from any install; ``data_dir``
(``--data``, or $SPECROLL_SERVEGEN_DIR) pools a raw copy instead. It has no prompt identities, so
the RL structure (groups, ranks across steps) comes from the synthetic generator's Gaussian
copula, while the marginal of the lengths is the measured one (step 0 exactly, up to the 1/4096
quantile resolution).
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specroll.core.errors import SpecrollError
from specroll.traces._preset import SynthPreset

ENV_VAR = "SPECROLL_SERVEGEN_DIR"
WINDOW_S = 21600  # the dataset's windows are 6 hours
INTERVAL_S = 600  # one trace row per 10 minutes
CAP = 32768
QUANTILE_POINTS = 4096


PACKED_DIR = Path(__file__).resolve().parent / "data"


def default_data_dir() -> Path | None:
    """$SPECROLL_SERVEGEN_DIR (a raw ServeGen folder), else None: the packed distributions."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else None


def _packed_pmf(field: str) -> LengthPMF:
    path = PACKED_DIR / f"servegen-r1-{field.split('_')[0]}.csv.gz"
    if not path.is_file():
        raise SpecrollError("the packed ServeGen distribution is missing from this install", file=path,
                            fix=f"reinstall specroll, or pass --data DIR (set {ENV_VAR}) to a raw copy")
    with gzip.open(path, "rt") as fh:
        arr = np.loadtxt(fh, delimiter=",", skiprows=1, ndmin=2)
    return LengthPMF(arr[:, 0].astype(np.int64), arr[:, 1])


@dataclass(frozen=True)
class LengthPMF:
    """A discrete distribution over token counts (values sorted, probabilities summing to 1)."""

    values: np.ndarray
    probs: np.ndarray

    def quantile(self, q: np.ndarray | float) -> np.ndarray:
        cdf = np.cumsum(self.probs)
        idx = np.searchsorted(cdf, np.asarray(q) * cdf[-1], side="left")
        return self.values[np.minimum(idx, len(self.values) - 1)]

    def mean(self) -> float:
        return float((self.values * self.probs).sum() / self.probs.sum())

    def quantile_table(self, points: int = QUANTILE_POINTS) -> tuple[int, ...]:
        """The inverse CDF at the mid-points of ``points`` equal-probability bins."""
        return tuple(int(v) for v in self.quantile((np.arange(points) + 0.5) / points))


def _parse_pmf(text: str, file: Path, field: str) -> dict[int, float]:
    try:
        pmf = ast.literal_eval(text) if isinstance(text, str) else None
    except (ValueError, SyntaxError):
        pmf = None
    if not isinstance(pmf, dict) or not pmf:
        raise SpecrollError("not a dict literal {tokens: probability}", file=file, field=field,
                            fix="restore the file from the ServeGen repository")
    return {int(k): float(v) for k, v in pmf.items()}


def _window_weights(trace_csv: Path) -> dict[int, float]:
    """Requests per window: sum over its 10-minute rows of rate x 600 s."""
    weights: dict[int, float] = {}
    if not trace_csv.exists():
        return weights
    with trace_csv.open() as fh:
        for row in csv.reader(fh):
            if len(row) < 2 or not row[0]:
                continue
            start = (int(float(row[0])) // WINDOW_S) * WINDOW_S
            weights[start] = weights.get(start, 0.0) + float(row[1] or 0.0) * INTERVAL_S
    return weights


def load_servegen_pmf(data_dir: str | Path | None = None, field: str = "output_tokens") -> LengthPMF:
    """Pool the per-client, per-window PMFs of ``field`` (``output_tokens`` or ``input_tokens``),
    each weighted by its window's request count."""
    data = Path(data_dir) if data_dir is not None else default_data_dir()
    if data is None:
        return _packed_pmf(field)
    raw = data / "raw"
    chunks = sorted(raw.glob("chunk-*-dataset.json")) if raw.is_dir() else []
    if not chunks:
        raise SpecrollError("ServeGen data not found (no raw/chunk-*-dataset.json)", file=data,
                            field="data", fix=f"pass --data DIR or set {ENV_VAR} to the "
                            "servegen-deepseek-r1 folder")
    pooled: dict[int, float] = {}
    for path in chunks:
        try:
            windows = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SpecrollError("not valid JSON", file=path, fix="restore the file") from None
        weights = _window_weights(path.with_name(path.name.replace("-dataset.json", "-trace.csv")))
        for start, window in windows.items():
            w = weights.get(int(start), 0.0)
            if w <= 0 or field not in window:
                continue
            for tokens, p in _parse_pmf(window[field], path, f"{start}.{field}").items():
                pooled[tokens] = pooled.get(tokens, 0.0) + w * p
    if not pooled:
        raise SpecrollError("no window with requests", file=raw, field=field,
                            fix="check that the chunk-*-trace.csv files are present")
    values = np.array(sorted(pooled), dtype=np.int64)
    probs = np.array([pooled[v] for v in values], dtype=np.float64)
    return LengthPMF(values, probs / probs.sum())


def read_pooled_csv(path: str | Path) -> LengthPMF:
    """The dataset's own pooled_output_tokens_pmf.csv (output_tokens,probability)."""
    path = Path(path)
    if not path.exists():
        raise SpecrollError("file not found", file=path, fix="check the path")
    arr = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    order = np.argsort(arr[:, 0])
    return LengthPMF(arr[order, 0].astype(np.int64), arr[order, 1] / arr[:, 1].sum())


def servegen_preset(data_dir: str | Path | None = None) -> SynthPreset:
    """``servegen-r1``: RL-shaped trace whose step-0 length marginal is ServeGen's DeepSeek-R1."""
    out = load_servegen_pmf(data_dir, "output_tokens")
    inp = load_servegen_pmf(data_dir, "input_tokens")
    log_in = np.log(np.maximum(inp.values, 1))
    mean_in = float((log_in * inp.probs).sum())
    sd_in = float(np.sqrt(((log_in - mean_in) ** 2 * inp.probs).sum()))
    return SynthPreset(
        name="servegen-r1",
        description="Output lengths of DeepSeek-R1 in production (ServeGen, arXiv 2505.09999), "
                    "given RL structure: 16 samples per prompt, correlated groups, stable ranks.",
        max_response_len=CAP, samples=16, prompts=512, steps=8, temperature=1.0,
        sigma_prompt=0.7, sigma_within=0.5,  # only their ratio matters here (copula ICC ~0.66)
        runaway_rate=0.0, mover_rate=0.05, persistence=0.97, drift_per_step=0.0,
        prompt_len_median=float(np.exp(mean_in)), prompt_len_sigma=sd_in,
        targets="the measured ServeGen DeepSeek-R1 output-length marginal (pooled over 73 clients, "
                "request-weighted); group and step structure as math-16k (choices, no RL data).",
        quantile_table=out.quantile_table(),
    )
