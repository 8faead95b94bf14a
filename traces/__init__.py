"""Rollout traces: schema (version 1), validated Parquet I/O, synthetic presets, importers, stats, plots.

See traces/README.md for the schema and the presets.
"""

from traces._io import TraceWriter, read_meta, read_trace, write_trace
from traces._schema import SCHEMA_VERSION, TraceMeta
from traces._trace import Trace

__all__ = [
    "SCHEMA_VERSION",
    "Trace",
    "TraceMeta",
    "TraceWriter",
    "read_meta",
    "read_trace",
    "write_trace",
]
