"""Figures through matplotlib's object API: no pyplot state and no global backend switch, so that
plotting from specroll never changes a user's own matplotlib setup (a notebook's inline backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from specroll.core.fileio import atomic_path

DPI = 110


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kw: Any) -> tuple[Any, Any]:
    """``(figure, axes)`` like ``pyplot.subplots``, on a figure no global state knows about."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def colormap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name]


def save_png(fig: Any, path: str | Path, *, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG atomically (no timestamp in the file: same figure, same bytes)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", metadata={"Software": None})
    return Path(path)
