"""Calibrated cost model of forward passes: shapes, per-iteration features, profiles, fitting.

Public surface (grows with the calibration issue): :class:`ModelShape`, :data:`MODEL_SHAPES`,
:func:`get_shape`, :class:`IterationBatch`.
"""

from calibration._batch import IterationBatch
from calibration._shapes import MODEL_SHAPES, ModelShape, get_shape

__all__ = ["MODEL_SHAPES", "IterationBatch", "ModelShape", "get_shape"]
