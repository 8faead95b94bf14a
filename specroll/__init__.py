"""specroll: simulate, tune and validate speculative decoding for RL rollouts.

The small public API is re-exported lazily (so `import specroll` stays cheap and the packages
can import :mod:`specroll.core` without a cycle):

- ``specroll.read_trace`` / ``write_trace`` / ``synthesize``  (traces)
- ``specroll.make_policy`` / ``load_policy_file``             (policies)
- ``specroll.load_profile`` / ``whatif_profile``              (calibration)
- ``specroll.simulate``                                       (simulator)
"""

from __future__ import annotations

import importlib
from typing import Any

from specroll.core import __version__
from specroll.core.errors import SpecrollError

_LAZY = {
    "read_trace": "specroll.traces",
    "write_trace": "specroll.traces",
    "synthesize": "specroll.traces",
    "make_policy": "specroll.policies",
    "load_policy_file": "specroll.policies",
    "load_profile": "specroll.calibration",
    "whatif_profile": "specroll.calibration",
    "simulate": "specroll.simulator",
}

__all__ = ["SpecrollError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'specroll' has no attribute {name!r}")
