"""Built-in profiles: shipped measured ones (calibration/profiles/) and datasheet what-ifs.

Names: ``DEVICE:MODEL`` or ``DEVICE:MODEL:tpN``. A datasheet DEVICE (h100-sxm, ...) gives a what-if
profile; any other DEVICE looks for the shipped measured file ``profiles/DEVICE-MODEL.json``.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

from specroll.calibration._devices import DEVICES, DeviceSpec
from specroll.calibration._profile import MEMORY_UTILIZATION, CostProfile
from specroll.core.errors import SpecrollError
from specroll.core.fileio import read_json
from specroll.core.shapes import MODEL_SHAPES

PROFILES_DIR = Path(__file__).parent / "profiles"

# A what-if profile takes every fitted coefficient (efficiencies, overlap exponent, overheads,
# raggedness) from the nearest measured profile OF THE SAME KIND of device. Nothing transfers
# across kinds: a CPU's bandwidth fraction (cache-dominated, against a streaming read) and its
# matmul fraction say nothing about HBM and tensor cores. Transferred, the CPU's e_bw 0.42 with
# e_f 0.78 made an H100 so memory-bound that verifying 9 tokens per request at batch 128 looked
# 1.30x a decode, inflating every speculation gain.
_TRANSFER_SAME_KIND = ("e_bw", "e_f", "e_attn", "p", "t_fixed", "t_request", "t_token", "a", "b")

# Until a profile of the same kind is measured: ASSUMPTIONS, not measurements, recorded per
# coefficient in coefficients_source. e_bw 0.8: decode kernels stream HBM at 70-90 % of peak;
# e_f 0.6: large bf16 GEMMs reach 60-75 % of dense peak; e_attn 0.3: attention FLOPs run well
# below GEMM efficiency; p 4: memory and compute mostly overlap; a = b = 1: a ragged
# (paged-attention, varlen) serving engine; 50 us: one CUDA-graph replay + synchronisation.
_ASSUMED = {"t_fixed": 50e-6, "t_request": 0.0, "t_token": 0.0, "e_bw": 0.8, "e_f": 0.6,
            "e_attn": 0.3, "p": 4.0, "a": 1.0, "b": 1.0}


@functools.cache
def measured_profiles() -> tuple[CostProfile, ...]:
    """The shipped measured profiles, sorted by file name (deterministic choice of 'nearest')."""
    out = []
    for path in sorted(PROFILES_DIR.glob("*.json")):
        prof = CostProfile.from_dict(read_json(path), file=path)
        if prof.kind == "measured":
            out.append(prof)
    return tuple(out)


def _nearest(device: DeviceSpec) -> CostProfile | None:
    """Same kind of device first, then the closest memory bandwidth (log ratio)."""
    cands = measured_profiles()
    if not cands:
        return None
    return min(cands, key=lambda p: (p.device.kind != device.kind,
                                     abs(math.log(p.device.mem_bw / device.mem_bw))))


def whatif_profile(device: str, model: str, tp: int = 1, dtype: str = "bfloat16") -> CostProfile:
    """A datasheet prediction: device peaks x model shape x TP (with all-reduce), kind="datasheet"."""
    spec = DEVICES.get(device, field="device")
    shape = MODEL_SHAPES.get(model, field="model")
    if not isinstance(tp, int) or tp < 1:
        raise SpecrollError(f"tp must be an integer >= 1, got {tp!r}", field="tp",
                            fix="use 1, 2, 4 or 8")
    base = _nearest(spec)
    coef = dict(_ASSUMED)
    origin = {k: "assumed" for k in coef}
    if base is not None and base.device.kind == spec.kind:
        for k in _TRANSFER_SAME_KIND:
            # A measured efficiency above 1 means the measured peak was low (caches on a CPU); a
            # datasheet peak is a true ceiling, so efficiencies transfer capped at 1.
            coef[k] = min(base.coefficients[k], 1.0) if k.startswith("e_") else base.coefficients[k]
            origin[k] = f"measured:{base.device.name}:{base.model}"
    prof = CostProfile(shape=shape, device=spec, dtype=dtype, tp=tp, kind="datasheet",
                       coefficients=coef, heldout_mape=None, ranges=None,
                       extra={"coefficients_source": origin,
                              "note": "prediction from datasheet figures; replace with a measured "
                                      "profile (specroll calibrate) before trusting it"})
    if prof.kv_capacity_tokens <= 0:
        raise SpecrollError(f"{model} does not fit on {tp} x {device} ({spec.memory_bytes / 1e9:g} GB each)",
                            field="tp", fix="use a larger tensor-parallel degree")
    return prof


def builtin_names() -> list[str]:
    """Names load_profile resolves without a file (what-if names list tp=1 only)."""
    names = [f"{d}:{m}" for d in DEVICES.names() for m in MODEL_SHAPES.names()
             if MODEL_SHAPES.get(m).weight_bytes(2.0) < MEMORY_UTILIZATION * DEVICES.get(d).memory_bytes]
    names += [p.stem.replace("-", ":", 1) for p in sorted(PROFILES_DIR.glob("*.json"))]
    return names


def load_profile(path_or_name: str | Path, expect_model: str | None = None) -> CostProfile:
    """Load a profile file or a built-in name; a profile for another model is a SpecrollError."""
    text = str(path_or_name)
    path = Path(text)
    if path.is_file() or text.endswith(".json") or ":" not in text:
        prof = CostProfile.from_dict(read_json(path), file=path)
        where = str(path)
    else:
        prof = _builtin(text)
        where = text
    if expect_model is not None and prof.model != expect_model:
        raise SpecrollError(
            f"profile is for model '{prof.model}', the config's model is '{expect_model}'",
            file=where, field="model",
            fix=f"calibrate {expect_model} (specroll calibrate --model {expect_model}) or use a what-if "
                f"profile such as 'h100-sxm:{expect_model}'")
    return prof


def _builtin(name: str) -> CostProfile:
    parts = name.split(":")
    tp = 1
    if len(parts) == 3 and parts[2].startswith("tp") and parts[2][2:].isdigit():
        tp = int(parts[2][2:])
        parts = parts[:2]
    if len(parts) != 2:
        raise SpecrollError(f"bad profile name '{name}'", field="profile",
                            fix="use a .json file or DEVICE:MODEL[:tpN], e.g. h100-sxm:qwen2.5-7b:tp2")
    device, model = parts
    if device in DEVICES:
        return whatif_profile(device, model, tp=tp)
    shipped = PROFILES_DIR / f"{device}-{model}.json"
    if tp == 1 and shipped.is_file():
        return CostProfile.from_dict(read_json(shipped), file=shipped)
    shipped_names = ", ".join(p.stem for p in sorted(PROFILES_DIR.glob("*.json"))) or "none yet"
    raise SpecrollError(f"no built-in profile '{name}'", field="profile",
                        fix="use a profile .json file, a datasheet device "
                            f"({', '.join(DEVICES.names())}) as DEVICE:MODEL, or one of the shipped "
                            f"profiles: {shipped_names}")
