"""Analysis: sim-vs-real validation (`specroll validate`) and reports (`specroll report`, landing).

Public surface: :class:`ValidateConfig`, :func:`validate`, :func:`format_summary`,
:func:`error_terms` (analysis/_validate.py).
"""

from analysis._validate import ValidateConfig, error_terms, format_summary, validate

__all__ = ["ValidateConfig", "error_terms", "format_summary", "validate"]
