"""The core every other package builds on, importing nothing else of specroll's.

- :mod:`specroll.core.errors`: :class:`SpecrollError`, the one error type for bad input.
- :mod:`specroll.core.fileio`: atomic writes, JSON/TOML reading.
- :mod:`specroll.core.params`: components' ``Params`` dataclasses from keyword arguments.
- :mod:`specroll.core.registry`: one small name -> factory registry per pluggable family.
- :mod:`specroll.core.progress`: progress bars and status lines on stderr.
- :mod:`specroll.core.shapes`: model shapes (layers, heads, widths), shared by the cost model and
  the real backend's model.
"""

__version__ = "0.1.0"
