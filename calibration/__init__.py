"""Calibrated cost model of forward passes: shapes, per-iteration features, profiles, fitting.

Public surface: :class:`ModelShape`, :data:`MODEL_SHAPES`, :func:`get_shape`, :class:`IterationBatch`,
:class:`DeviceSpec`, :data:`DEVICES`, :class:`CostProfile`, :func:`load_profile`,
:func:`whatif_profile`, :func:`builtin_names`.
"""

from specroll.calibration._batch import IterationBatch
from specroll.calibration._calibrate import (
    Calibration,
    calibrate,
    fit_rows,
    measurements_path,
    plot_fit,
    plot_path,
    read_measurements,
    write_measurements,
)
from specroll.calibration._devices import DEVICES, DeviceSpec, get_device
from specroll.calibration._profile import CostProfile
from specroll.calibration._whatif import builtin_names, load_profile, whatif_profile
from specroll.core.shapes import MODEL_SHAPES, ModelShape, get_shape

__all__ = [
    "Calibration",
    "calibrate",
    "fit_rows",
    "measurements_path",
    "plot_fit",
    "plot_path",
    "read_measurements",
    "write_measurements",
    "DEVICES",
    "MODEL_SHAPES",
    "CostProfile",
    "DeviceSpec",
    "IterationBatch",
    "ModelShape",
    "builtin_names",
    "get_device",
    "get_shape",
    "load_profile",
    "whatif_profile",
]
