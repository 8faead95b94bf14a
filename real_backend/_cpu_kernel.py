"""A batch-invariant float32 linear map for CPUs with AVX-512: the real backend's matrix products.

Why: the BLAS behind torch (MKL) streams SmolLM2's weights at ~11 GB/s for a one-row product on
this machine, takes a different kernel (other bits) below 4 rows, and is far from its peak for the
4-64 rows of a decode or verify batch. ``_cpu_linear.cpp`` packs each weight once in panels of 32
outputs (contiguous, read once per call by the thread that owns the panel) and computes every
output as one fused multiply-add chain over the input dimension, in order, from zero: a row's
result is the same bits whatever the row count, the tile it lands in, the thread count or the
other rows of the batch. That is batch invariance by construction, where the BLAS path needs every
product padded to 4 rows (``_model.MIN_ROWS``), and the padding is what made small batches slow.

The library is compiled on first use with the system's C++ compiler (``$CXX``, else ``c++``),
``-O3 -march=native -fopenmp``, into ``$SPECROLL_CACHE/kernels/`` keyed by the source, the flags,
the compiler and the CPU's flags; it runs its loops on torch's own OpenMP pool (the library links
the ``libgomp.so.1`` torch has already loaded), so ``torch.set_num_threads`` sets its threads. No
compiler, no AVX-512, or ``SPECROLL_CPU_KERNEL=0``: :func:`available` is False and the model keeps
the BLAS path (padded to 4 rows), which is just as lossless, only slower.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from specroll.real_backend._gguf import cache_root

_SOURCE = Path(__file__).with_name("_cpu_linear.cpp")
_FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
PANEL = 32  # outputs per packed panel (NB in _cpu_linear.cpp)
_lib: ctypes.CDLL | None | bool = False  # False: not tried yet; None: unavailable


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def _build() -> ctypes.CDLL | None:
    compiler = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
    if compiler is None or not _SOURCE.is_file():
        return None
    src = _SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join((compiler, *_FLAGS, _cpu_flags(), torch.__version__)).encode())
    lib = cache_root() / "kernels" / f"cpu_linear-{key.hexdigest()[:16]}.so"
    if not lib.is_file():
        lib.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
            out = Path(tmp) / lib.name
            done = subprocess.run([compiler, *_FLAGS, str(_SOURCE), "-o", str(out)], capture_output=True,
                                  timeout=300)
            if done.returncode != 0:
                return None
            os.replace(out, lib)  # atomic: a concurrent build never loads half a file
    handle = ctypes.CDLL(str(lib))
    handle.specroll_kernel_ok.restype = ctypes.c_int
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    handle.specroll_pack.argtypes = [ptr, i64, i64, ptr]
    handle.specroll_linear.argtypes = [ptr, i64, i64, ptr, i64, ptr]
    return handle if handle.specroll_kernel_ok() == 1 else None


def _library() -> ctypes.CDLL | None:
    global _lib
    if _lib is False:
        try:
            _lib = None if os.environ.get("SPECROLL_CPU_KERNEL", "1") == "0" else _build()
        except (OSError, subprocess.SubprocessError):
            _lib = None
    return _lib  # type: ignore[return-value]


def available() -> bool:
    """True when the compiled kernel can run here (see the module doc for when it cannot)."""
    return _library() is not None


def pack(weight: torch.Tensor) -> torch.Tensor:
    """The panel layout of a float32 CPU weight [N, K] (zero-padded to a multiple of 32 outputs)."""
    lib = _library()
    if lib is None:
        raise RuntimeError("the CPU kernel is not available (see real_backend/_cpu_kernel.py)")
    w = weight.detach().contiguous()
    n, k = w.shape
    packed = torch.empty(-(-n // PANEL) * PANEL * k, dtype=torch.float32)
    lib.specroll_pack(w.data_ptr(), n, k, packed.data_ptr())
    return packed


def linear(x: torch.Tensor, packed: torch.Tensor, n_out: int,
           bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] float32 (CPU) times the packed weight [N, K]^T (+ bias) -> [..., N]."""
    lib = _library()
    assert lib is not None
    lead, k = x.shape[:-1], x.shape[-1]
    flat = x.reshape(-1, k).contiguous()
    out = torch.empty((flat.shape[0], n_out), dtype=torch.float32)
    if flat.shape[0]:
        lib.specroll_linear(flat.data_ptr(), flat.shape[0], k, packed.data_ptr(), n_out, out.data_ptr())
    if bias is not None:
        out += bias
    return out.view(*lead, n_out)


class PackedWeights:
    """Packed copies of a model's weights, made on first use and remade when a weight changes
    (another tensor, or the same one written in place: its version counter moves)."""

    def __init__(self) -> None:
        self._packs: dict[int, tuple[int, int, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
        entry = self._packs.get(id(weight))
        stamp = (weight.data_ptr(), _version(weight))
        if entry is None or entry[:2] != stamp:
            entry = (*stamp, pack(weight))
            self._packs[id(weight)] = entry
        return linear(x, entry[2], weight.shape[0], bias)


def _version(t: torch.Tensor) -> int:
    try:
        return int(t._version)
    except RuntimeError:  # an inference-mode tensor keeps no version counter (nor can it be written)
        return -1
