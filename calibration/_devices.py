"""Accelerator datasheet figures: what a what-if profile knows about a GPU it has never measured.

Peak FLOP/s are *dense* bf16 tensor-core figures (datasheets print the 2:4-sparsity number first;
it is exactly twice the dense one and decoding never uses it). Bandwidths are bytes/s. The
interconnect bandwidth is per direction per GPU, the figure a ring all-reduce is limited by
(datasheets print the bidirectional total, twice as much).

The interconnect latency is not on any datasheet: it is the order of magnitude of one small NCCL
all-reduce step (a few microseconds on NVLink, ~10+ us over PCIe) and is labelled as an assumption.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from specroll.core.errors import SpecrollError
from specroll.core.registry import Registry

TERA = 1e12
GIGA = 1e9


@dataclass(frozen=True)
class DeviceSpec:
    """Peak figures of one device; ``kind`` is "gpu" or "cpu" (efficiencies transfer within a kind)."""

    name: str
    kind: str
    peak_flops: float
    """dense bf16 (or the profile's dtype) FLOP/s of one device."""
    mem_bw: float
    """memory bandwidth, bytes/s."""
    memory_bytes: float
    """device memory, bytes."""
    link_bw: float
    """interconnect bandwidth per direction, bytes/s (0 = no interconnect)."""
    link_latency: float
    """seconds per all-reduce hop (assumed, see module docstring)."""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, *, file: str | None = None, field: str = "device") -> DeviceSpec:
        if not isinstance(d, dict):
            raise SpecrollError("expected an object", file=file, field=field,
                                fix="write the device spec as a JSON object")
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d:
                if f.name == "source":
                    continue
                raise SpecrollError("missing", file=file, field=f"{field}.{f.name}",
                                    fix=f"add {field}.{f.name} (see calibration/README.md)")
            kw[f.name] = d[f.name]
        for key in ("peak_flops", "mem_bw", "memory_bytes", "link_bw", "link_latency"):
            v = kw[key]
            if not isinstance(v, int | float) or isinstance(v, bool) or not v >= 0 or v == float("inf"):
                raise SpecrollError(f"must be a finite number >= 0, got {v!r}", file=file,
                                    field=f"{field}.{key}", fix="write a finite non-negative number")
        if kw["peak_flops"] <= 0 or kw["mem_bw"] <= 0:
            raise SpecrollError("peak_flops and mem_bw must be > 0", file=file, field=field,
                                fix="write the device's peak figures")
        return cls(**{k: (float(v) if k not in ("name", "kind", "source") else str(v))
                      for k, v in kw.items()})


DEVICES: Registry[DeviceSpec] = Registry("device")


def _add(spec: DeviceSpec) -> None:
    DEVICES.add(spec.name, spec)


# NVIDIA H100 SXM5 datasheet: BF16 tensor 1,979 TFLOPS with sparsity (989.4 dense); HBM3 3.35 TB/s;
# 80 GB; NVLink 900 GB/s (bidirectional total -> 450 GB/s per direction).
_add(DeviceSpec("h100-sxm", "gpu", 989.4 * TERA, 3.35 * TERA, 80 * GIGA, 450 * GIGA, 5e-6,
                "NVIDIA H100 Tensor Core GPU datasheet (SXM5)"))
# NVIDIA H200 SXM datasheet: BF16 1,979 TFLOPS sparse (989.4 dense), HBM3e 4.8 TB/s, 141 GB,
# NVLink 900 GB/s.
_add(DeviceSpec("h200", "gpu", 989.4 * TERA, 4.8 * TERA, 141 * GIGA, 450 * GIGA, 5e-6,
                "NVIDIA H200 Tensor Core GPU datasheet (SXM)"))
# NVIDIA A100 80GB SXM datasheet: BF16 312 TFLOPS dense (624 sparse), HBM2e 2,039 GB/s, 80 GB,
# NVLink 600 GB/s (bidirectional -> 300 GB/s per direction).
_add(DeviceSpec("a100-80gb", "gpu", 312 * TERA, 2.039 * TERA, 80 * GIGA, 300 * GIGA, 5e-6,
                "NVIDIA A100 Tensor Core GPU datasheet (80GB SXM)"))
# NVIDIA HGX B200 datasheet, per GPU: FP16/BF16 4.5 PFLOPS sparse (2.25 dense), HBM3e 8 TB/s,
# 180 GB, NVLink 5 1.8 TB/s (bidirectional -> 900 GB/s per direction).
_add(DeviceSpec("b200", "gpu", 2250 * TERA, 8.0 * TERA, 180 * GIGA, 900 * GIGA, 5e-6,
                "NVIDIA HGX B200 datasheet (per GPU)"))
# NVIDIA L40S datasheet: BF16 tensor 362.05 TFLOPS dense (733 sparse), GDDR6 864 GB/s, 48 GB; no NVLink:
# PCIe Gen4 x16 64 GB/s bidirectional -> 32 GB/s per direction; PCIe hops assumed ~15 us.
_add(DeviceSpec("l40s", "gpu", 362.05 * TERA, 0.864 * TERA, 48 * GIGA, 32 * GIGA, 15e-6,
                "NVIDIA L40S datasheet"))


def get_device(name: str) -> DeviceSpec:
    return DEVICES.get(name)
