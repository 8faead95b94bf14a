"""README.md holds no figure blocks; it is checked so that none is typed by hand."""

from __future__ import annotations

CHECKED_DOCS: tuple[str, ...] = ("README.md", "docs/policies.md")
