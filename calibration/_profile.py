"""CostProfile: seconds per engine iteration for one model x device x TP x dtype, saved as JSON.

A profile is either ``measured`` (coefficients fitted to timings of our own backend, with its
held-out error) or ``datasheet`` (a what-if prediction: datasheet peaks x model shape x TP, with
the efficiency coefficients of the nearest measured profile). See calibration/README.md.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from specroll.calibration._batch import IterationBatch
from specroll.calibration._costmodel import (
    COEF_BOUNDS,
    COEF_NAMES,
    DTYPE_BYTES,
    FORWARD_DRAFTERS,
    Consts,
    drafter_forward_time,
    forward_time,
    make_consts,
)
from specroll.calibration._devices import DeviceSpec
from specroll.core.errors import SpecrollError
from specroll.core.fileio import write_json
from specroll.core.shapes import MODEL_SHAPES, ModelShape

FORMAT = "specroll-cost-profile"
VERSION = 1
KINDS = ("measured", "datasheet")
# Fraction of device memory a serving engine gives to weights + KV (vLLM's default
# gpu_memory_utilization); the rest is activations, CUDA graphs and the allocator's slack.
MEMORY_UTILIZATION = 0.9
# The ranges a measured profile records, and the IterationBatch field each one bounds.
RANGE_FIELDS: tuple[str, ...] = ("n", "q_max", "c_max")


class CostProfile:
    """Prices one iteration of every engine at once; pure numpy, no per-request Python."""

    def __init__(self, *, shape: ModelShape, device: DeviceSpec, dtype: str, tp: int, kind: str,
                 coefficients: dict[str, float], drafter: dict[str, Any] | None = None,
                 kv_capacity_tokens: int | None = None, heldout_mape: float | None = None,
                 ranges: dict[str, list[float]] | None = None, extra: dict[str, Any] | None = None,
                 source: str | None = None) -> None:
        self.shape = shape
        self.model = shape.name
        self.device = device
        self.dtype = dtype
        self.tp = int(tp)
        self.kind = kind
        self.coefficients = {k: float(coefficients[k]) for k in COEF_NAMES}
        self.drafter = dict(drafter or {"kind": "none", "per_request_s": 0.0, "per_token_s": 0.0})
        self.heldout_mape = heldout_mape
        self.ranges = ranges
        self.extra = dict(extra or {})
        self.source = source
        self._consts: Consts = make_consts(shape, device, self.tp, DTYPE_BYTES[dtype])
        self.kv_capacity_tokens = int(kv_capacity_tokens if kv_capacity_tokens is not None
                                      else self._default_kv_capacity())
        self._draft_consts: Consts | None = _draft_consts(self.drafter, shape, device, self.tp, dtype)
        # PEARL: the drafter runs on its own device(s), concurrently with verification.
        self._overlap = bool(self.drafter.get("overlap", False))
        self._warned = False

    # -- prediction ---------------------------------------------------------------------------

    def iteration_time(self, batch: IterationBatch) -> np.ndarray:
        """Seconds of one iteration per engine (E,), drafter included; 0 where ``n == 0``."""
        n = np.asarray(batch.n, dtype=np.float64)
        if not self._warned and self.ranges is not None:
            self._check_range(batch, n)
        t = forward_time(self.coefficients, self._consts, n, batch.q_sum, batch.q_max, batch.c_sum,
                         batch.c_max, batch.qc_sum)
        d = self._drafter_time(batch, n)
        if not (isinstance(d, float) and d == 0.0):  # t >= 0, so t + 0.0 would be t: skip the pass
            t = np.maximum(t, d) if self._overlap else t + d
        return np.where(n > 0, t, 0.0)

    def with_drafter(self, drafter: dict[str, Any], *, file: str | None = None,
                     field: str = "drafter") -> CostProfile:
        """A copy of this profile whose drafter cost is ``drafter`` (validated: a bad spec is a
        SpecrollError naming ``field``), e.g. a simulation config's [drafter] table."""
        _check_drafter(drafter, file, self.shape, field=field)
        return CostProfile(shape=self.shape, device=self.device, dtype=self.dtype, tp=self.tp, kind=self.kind,
                           coefficients=self.coefficients, drafter=dict(drafter),
                           kv_capacity_tokens=self.kv_capacity_tokens, heldout_mape=self.heldout_mape,
                           ranges=self.ranges, extra=self.extra, source=self.source)

    def reads_context_max(self) -> bool:
        """Whether iteration_time still reads ``IterationBatch.c_max``: only a padded backend
        (a < 1) prices it, and the range check reads it until it has warned once. Lets the
        simulator skip computing it."""
        return self.coefficients["a"] != 1.0 or (self.ranges is not None and not self._warned)

    def reads_query_max(self) -> bool:
        """Whether iteration_time still reads ``IterationBatch.q_max`` (a or b < 1, or the range
        check until it has warned)."""
        c = self.coefficients
        return c["a"] != 1.0 or c["b"] != 1.0 or (self.ranges is not None and not self._warned)

    def prefill_time(self, prompt_lens: np.ndarray) -> float:
        """Seconds to prefill these prompts together in one forward (no cached context)."""
        q = np.asarray(prompt_lens, dtype=np.float64).reshape(-1)
        if q.size == 0:
            return 0.0
        batch = IterationBatch.from_requests(q, np.zeros_like(q))
        t = forward_time(self.coefficients, self._consts, batch.n, batch.q_sum, batch.q_max,
                         batch.c_sum, batch.c_max, batch.qc_sum, prefill=True)
        return float(t[0])

    def prefill_times(self, prompt_lens: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
        """(n_groups,) seconds: :meth:`prefill_time` of each group's prompts (``group`` in
        [0, n_groups)), in one vectorized call; the same numbers as one call per group."""
        q = np.asarray(prompt_lens, dtype=np.float64).reshape(-1)
        batch = IterationBatch.from_requests(q, np.zeros_like(q), group, n_groups)
        return forward_time(self.coefficients, self._consts, batch.n, batch.q_sum, batch.q_max,
                            batch.c_sum, batch.c_max, batch.qc_sum, prefill=True)

    def _drafter_time(self, batch: IterationBatch, n: np.ndarray) -> np.ndarray | float:
        d = self.drafter
        draft = np.asarray(batch.draft_tokens, dtype=np.float64)
        if self._draft_consts is not None:
            # Forward passes of a draft model, a diffusion drafter or the target's first layers
            # (calibration/_costmodel.py: FORWARD_DRAFTERS).
            return drafter_forward_time(
                d["kind"], self.coefficients, self._draft_consts, n, draft,
                np.asarray(batch.q_max, dtype=np.float64), np.asarray(batch.c_sum, dtype=np.float64),
                np.asarray(batch.c_max, dtype=np.float64), denoise_steps=int(d.get("denoise_steps", 1)),
                block=d.get("block"), kv_cache=bool(d.get("kv_cache", True)))
        per_req = float(d.get("per_request_s", 0.0))
        per_tok = float(d.get("per_token_s", 0.0))
        if per_req == 0.0 and per_tok == 0.0:
            return 0.0
        # Engines that draft nothing this iteration (autoregressive policy) never ask for proposals.
        return np.where(draft > 0, per_req * n + per_tok * draft, 0.0)

    def _check_range(self, batch: IterationBatch, n: np.ndarray) -> None:
        active = n > 0
        if not active.any():
            return
        values = {"n": n, "q_max": np.asarray(batch.q_max), "c_max": np.asarray(batch.c_max)}
        for name in RANGE_FIELDS:
            lo, hi = self.ranges.get(name, (-math.inf, math.inf)) if self.ranges else (-math.inf, math.inf)
            v = values[name][active]
            if v.min() < lo or v.max() > hi:
                self._warned = True
                warnings.warn(
                    f"cost profile {self.model}@{self.device.name} used outside its measured range: "
                    f"{name} in [{v.min():g}, {v.max():g}], measured [{lo:g}, {hi:g}]; predictions "
                    "there are extrapolations", RuntimeWarning, stacklevel=3)
                return

    def _default_kv_capacity(self) -> int:
        k = self._consts
        free = MEMORY_UTILIZATION * self.device.memory_bytes - k.weight_bytes
        return max(0, int(free // k.kv_bytes_per_token))

    # -- persistence --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model,
            "kind": self.kind,
            "device": self.device.to_dict(),
            "dtype": self.dtype,
            "tp": self.tp,
            "shape": self.shape.to_dict(),
            "coefficients": dict(self.coefficients),
            "drafter": dict(self.drafter),
            "kv_capacity_tokens": self.kv_capacity_tokens,
            "heldout_mape": self.heldout_mape,
            "ranges": self.ranges,
            **self.extra,
        }

    def save(self, path: str | Path) -> Path:
        """Write the profile as strict JSON, atomically."""
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, *, file: str | Path | None = None) -> CostProfile:
        """Validate a profile dict; every problem is one SpecrollError naming the field and fix."""
        return _parse(d, None if file is None else str(file))

    def __repr__(self) -> str:
        mape = "n/a" if self.heldout_mape is None else f"{100 * self.heldout_mape:.1f}%"
        return (f"CostProfile({self.model} on {self.device.name} x{self.tp} {self.dtype}, "
                f"{self.kind}, held-out MAPE {mape})")


_KNOWN_KEYS = {"format", "version", "model", "kind", "device", "dtype", "tp", "shape", "coefficients",
               "drafter", "kv_capacity_tokens", "heldout_mape", "ranges"}


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _parse(d: Any, file: str | None) -> CostProfile:
    fix_doc = "see calibration/README.md for the profile format, or re-run `specroll calibrate`"
    if not isinstance(d, dict):
        raise SpecrollError("a cost profile must be a JSON object", file=file, fix=fix_doc)
    if d.get("format", FORMAT) != FORMAT:
        raise SpecrollError(f"not a cost profile (format {d.get('format')!r})", file=file,
                            field="format", fix=f"pass a file with format '{FORMAT}'")
    for key in ("model", "kind", "device", "dtype", "tp", "coefficients", "kv_capacity_tokens",
                "heldout_mape", "ranges"):
        if key not in d:
            raise SpecrollError("missing", file=file, field=key, fix=fix_doc)
    if d["kind"] not in KINDS:
        raise SpecrollError(f"unknown kind {d['kind']!r}", file=file, field="kind",
                            fix="use 'measured' or 'datasheet'")
    if d["dtype"] not in DTYPE_BYTES:
        raise SpecrollError(f"unknown dtype {d['dtype']!r}", file=file, field="dtype",
                            fix=f"use one of: {', '.join(DTYPE_BYTES)}")
    if not isinstance(d["tp"], int) or isinstance(d["tp"], bool) or d["tp"] < 1:
        raise SpecrollError(f"must be an integer >= 1, got {d['tp']!r}", file=file, field="tp",
                            fix="write the tensor-parallel degree")
    shape = _parse_shape(d, file)
    device = DeviceSpec.from_dict(d["device"], file=file)
    coef = d["coefficients"]
    if not isinstance(coef, dict):
        raise SpecrollError("expected an object", file=file, field="coefficients", fix=fix_doc)
    for name in COEF_NAMES:
        if name not in coef:
            raise SpecrollError("missing", file=file, field=f"coefficients.{name}", fix=fix_doc)
        v = coef[name]
        lo, hi = COEF_BOUNDS[name]
        if not _finite(v) or not lo <= v <= hi:
            raise SpecrollError(f"must be a finite number in [{lo:g}, {hi:g}], got {v!r}", file=file,
                                field=f"coefficients.{name}", fix=fix_doc)
    kv = d["kv_capacity_tokens"]
    if not isinstance(kv, int) or isinstance(kv, bool) or kv < 0:
        raise SpecrollError(f"must be an integer >= 0, got {kv!r}", file=file,
                            field="kv_capacity_tokens", fix=fix_doc)
    mape = d["heldout_mape"]
    if mape is not None and (not _finite(mape) or mape < 0):
        raise SpecrollError(f"must be a finite number >= 0 or null, got {mape!r}", file=file,
                            field="heldout_mape", fix=fix_doc)
    if d["kind"] == "measured" and mape is None:
        raise SpecrollError("a measured profile must report its held-out error", file=file,
                            field="heldout_mape", fix="re-run `specroll calibrate`")
    ranges = _parse_ranges(d["ranges"], file)
    drafter = d.get("drafter")
    if drafter is not None:
        _check_drafter(drafter, file, shape)
    extra = {k: v for k, v in d.items() if k not in _KNOWN_KEYS}
    return CostProfile(shape=shape, device=device, dtype=d["dtype"], tp=d["tp"], kind=d["kind"],
                       coefficients=coef, drafter=drafter, kv_capacity_tokens=kv, heldout_mape=mape,
                       ranges=ranges, extra=extra, source=file)


def _parse_shape(d: dict, file: str | None) -> ModelShape:
    model = d["model"]
    if not isinstance(model, str) or not model:
        raise SpecrollError("must be a model shape name", file=file, field="model",
                            fix=f"use one of: {', '.join(MODEL_SHAPES.names())}")
    raw = d.get("shape")
    if raw is None:
        return MODEL_SHAPES.get(model, file=file, field="model")
    if not isinstance(raw, dict):
        raise SpecrollError("expected an object", file=file, field="shape", fix="write the model shape")
    try:
        shape = ModelShape(**raw)
    except TypeError as exc:
        raise SpecrollError(f"bad model shape ({exc})", file=file, field="shape",
                            fix="write every ModelShape field (see specroll/core/shapes.py)") from None
    for f, v in raw.items():
        if f not in ("name", "tied_embeddings") and (not isinstance(v, int) or v <= 0):
            raise SpecrollError(f"must be a positive integer, got {v!r}", file=file, field=f"shape.{f}",
                                fix="write the model's config value")
    if shape.name != model:
        raise SpecrollError(f"shape is '{shape.name}' but model is '{model}'", file=file,
                            field="shape.name", fix="make them agree")
    return shape


def _parse_ranges(r: Any, file: str | None) -> dict[str, list[float]] | None:
    if r is None:
        return None
    if not isinstance(r, dict):
        raise SpecrollError("expected an object or null", file=file, field="ranges",
                            fix="write {\"n\": [lo, hi], ...} or null")
    out = {}
    for name, pair in r.items():
        if (not isinstance(pair, list) or len(pair) != 2 or not all(_finite(x) for x in pair)
                or pair[0] > pair[1]):
            raise SpecrollError(f"must be [lo, hi] with finite lo <= hi, got {pair!r}", file=file,
                                field=f"ranges.{name}", fix="write the measured [min, max]")
        out[name] = [float(pair[0]), float(pair[1])]
    return out


def _draft_consts(dr: dict[str, Any], shape: ModelShape, device: DeviceSpec, tp: int, dtype: str
                  ) -> Consts | None:
    """Constants of the drafter's forward passes (None for a model-free drafter)."""
    kind = dr.get("kind")
    if kind not in FORWARD_DRAFTERS:
        return None
    if kind == "layers":
        # The target's first `layers` layers and its LM head (an early exit), on the target's devices.
        n = int(dr["layers"])
        return make_consts(dataclasses.replace(shape, name=f"{shape.name}[:{n}]", n_layers=n), device, tp,
                           DTYPE_BYTES[dtype])
    return make_consts(MODEL_SHAPES.get(dr["model"]), device, int(dr.get("tp", tp)), DTYPE_BYTES[dtype])


# Keys each new kind accepts (a typo is an error); "model" profiles predate the check and keep any key.
_DRAFTER_KEYS = {
    "parallel": {"kind", "model", "tp", "overlap", "denoise_steps", "block", "kv_cache", "source", "note"},
    "layers": {"kind", "layers", "overlap", "source", "note"},
}


def _check_drafter(dr: Any, file: str | None, shape: ModelShape | None = None,
                   field: str = "drafter") -> None:
    if not isinstance(dr, dict):
        raise SpecrollError("expected an object", file=file, field=field, fix="write the drafter cost")
    if not isinstance(dr.get("overlap", False), bool):
        raise SpecrollError(f"must be true or false, got {dr.get('overlap')!r}", file=file,
                            field=f"{field}.overlap",
                            fix="write overlap = true for a drafter on its own device")
    kind = dr.get("kind")
    if kind in _DRAFTER_KEYS:
        bad = sorted(set(dr) - _DRAFTER_KEYS[kind])
        if bad:
            raise SpecrollError(f"unknown key '{bad[0]}' for drafter kind '{kind}'", file=file,
                                field=f"{field}.{bad[0]}",
                                fix=f"use: {', '.join(sorted(_DRAFTER_KEYS[kind]))}")
    if kind in ("model", "parallel"):
        MODEL_SHAPES.get(dr.get("model", ""), file=file, field=f"{field}.model")
        for key, lo in (("tp", 1), ("denoise_steps", 1), ("block", 1)):
            v = dr.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < lo):
                raise SpecrollError(f"must be an integer >= {lo}, got {v!r}", file=file,
                                    field=f"{field}.{key}", fix=f"write {key} = {lo} or more")
        if not isinstance(dr.get("kv_cache", True), bool):
            raise SpecrollError("must be true or false", file=file, field=f"{field}.kv_cache")
        return
    if kind == "layers":
        n = dr.get("layers")
        top = None if shape is None else shape.n_layers - 1
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or (top is not None and n > top):
            raise SpecrollError(f"must be an integer in [1, {top if top else 'layers - 1'}], got {n!r}",
                                file=file, field=f"{field}.layers",
                                fix="write how many of the target's layers draft (an early exit)")
        return
    for key in ("per_request_s", "per_token_s"):
        v = dr.get(key, 0.0)
        if not _finite(v) or v < 0:
            raise SpecrollError(f"must be a finite number >= 0, got {v!r}", file=file,
                                field=f"{field}.{key}", fix="write seconds")
