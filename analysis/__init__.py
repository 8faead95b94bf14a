"""Analysis: reports over specroll outputs (and, with `specroll validate`, sim-vs-real validation).

Public surface: :func:`report` (one self-contained HTML page plus PNGs for any output folder),
:func:`build_report` (the same, returning what was made), :func:`discover` (which runs a folder
holds). See docs/report.md. Validation: :class:`ValidateConfig`, :func:`validate`,
:func:`format_summary`, :func:`error_terms` (analysis/_validate.py, docs/validation.md).
"""

from specroll.analysis._kinds import Run, discover
from specroll.analysis._report import ReportResult, build_report, report
from specroll.analysis._validate import ValidateConfig, error_terms, format_summary, validate

__all__ = ["ReportResult", "Run", "ValidateConfig", "build_report", "discover", "error_terms",
           "format_summary", "report", "validate"]
