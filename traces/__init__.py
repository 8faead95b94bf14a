"""Rollout traces: schema (version 1), validated Parquet I/O, synthetic presets, importers, stats, plots.

See traces/README.md for the schema and the presets.
"""

from specroll.traces import _presets  # noqa: F401  (registers the named presets)
from specroll.traces._io import TraceWriter, read_meta, read_trace, write_trace
from specroll.traces._jsonl import JsonlFields, import_jsonl
from specroll.traces._plot import plot_trace
from specroll.traces._schema import SCHEMA_VERSION, TraceMeta
from specroll.traces._servegen import LengthPMF, load_servegen_pmf, read_pooled_csv, servegen_preset
from specroll.traces._stats import (
    format_stats,
    intraclass_correlation,
    rank_stability,
    top_share,
    trace_stats,
)
from specroll.traces._synth import (
    PRESETS,
    SynthPreset,
    get_preset,
    preset_names,
    synthesize,
    synthesize_to_file,
    with_overrides,
)
from specroll.traces._trace import Trace

__all__ = [
    "JsonlFields",
    "LengthPMF",
    "import_jsonl",
    "load_servegen_pmf",
    "plot_trace",
    "read_pooled_csv",
    "servegen_preset",
    "PRESETS",
    "SCHEMA_VERSION",
    "SynthPreset",
    "Trace",
    "TraceMeta",
    "TraceWriter",
    "format_stats",
    "get_preset",
    "intraclass_correlation",
    "preset_names",
    "rank_stability",
    "read_meta",
    "read_trace",
    "synthesize",
    "synthesize_to_file",
    "top_share",
    "trace_stats",
    "with_overrides",
    "write_trace",
]
