"""A small name -> factory registry, one per pluggable family (policies, drafters, presets, ...)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from specroll.core.errors import SpecrollError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; unknown names raise one clear error listing the known ones."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.family} '{name}' registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def named(self, name: str) -> Callable[[T], T]:
        """Class decorator: register under ``name`` and set the class's ``name`` attribute (the
        families whose instances report their own name: policies, drafters, ...)."""

        def deco(obj: T) -> T:
            obj.name = name  # type: ignore[attr-defined]
            self.add(name, obj)
            return obj

        return deco

    def get(self, name: str, *, file: str | None = None, field: str | None = None) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise SpecrollError(
                f"unknown {self.family} '{name}'", file=file, field=field, fix=f"use one of: {known}"
            ) from None

    @contextlib.contextmanager
    def restored(self) -> Iterator[None]:
        """Whatever is registered inside the block is forgotten after it (tests that register their
        own toy families leave the registry as they found it)."""
        saved = dict(self._items)
        try:
            yield
        finally:
            self._items.clear()
            self._items.update(saved)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
