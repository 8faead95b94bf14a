"""Analysis: reports over specroll outputs (and, with `specroll validate`, sim-vs-real validation).

Public surface: :func:`report` (one self-contained HTML page plus PNGs for any output folder),
:func:`build_report` (the same, returning what was made), :func:`discover` (which runs a folder
holds). See docs/report.md. Validation: :class:`ValidateConfig`, :func:`validate`,
:func:`format_summary`, :func:`error_terms` (analysis/_validate.py, docs/validation.md). The main
job (`make run`): :func:`run_main`, :func:`format_main`, :class:`MainConfig`, :data:`MAIN_DEFAULTS`.
"""

from specroll.analysis._kinds import Run, discover
from specroll.analysis._mainjob import DEFAULTS as MAIN_DEFAULTS
from specroll.analysis._mainjob import STAGES as MAIN_STAGES
from specroll.analysis._mainjob import (
    MainConfig,
    MainSummary,
    format_main,
    load_main_config,
    run_main,
)
from specroll.analysis._report import ReportResult, build_report, report
from specroll.analysis._validate import ValidateConfig, error_terms, format_summary, validate

__all__ = ["MAIN_DEFAULTS", "MAIN_STAGES", "MainConfig", "MainSummary", "ReportResult", "Run",
           "ValidateConfig", "build_report", "discover", "error_terms", "format_main", "format_summary",
           "load_main_config", "report", "run_main", "validate"]
