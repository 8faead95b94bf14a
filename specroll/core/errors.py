"""One error type for every bad input: the CLI prints its message alone (no traceback) and exits 2."""

from __future__ import annotations

from pathlib import Path


class SpecrollError(Exception):
    """A user-facing error that names what is wrong, where, and how to fix it.

    The message reads ``FILE: field 'FIELD': WHAT. Fix: FIX`` with the parts that are known.
    """

    def __init__(
        self,
        what: str,
        *,
        file: str | Path | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.what = what
        self.file = None if file is None else str(file)
        self.field = field
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = []
        if self.file:
            parts.append(f"{self.file}:")
        if self.field:
            parts.append(f"field '{self.field}':")
        parts.append(self.what.rstrip("."))
        text = " ".join(parts) + "."
        if self.fix:
            text += f" Fix: {self.fix.rstrip('.')}."
        return text
