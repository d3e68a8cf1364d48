"""One small generic registry: names -> objects, a second object under a taken name is an error.

A hand-written dict silently lets a later registration replace an earlier one; this refuses it, and an
unknown name gives a ConfigError that lists what is known.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from mtpeft.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, *, base: type | None = None, field: str | None = None) -> None:
        self.what = what  # "task kind": named in error messages
        self.base = base  # what every registered object must be an instance of, if anything
        self.field = field  # the config field an unknown name came from, if any
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"a {self.what} named '{name}' is already registered")
        if self.base is not None and not isinstance(item, self.base):
            raise TypeError(f"{self.what} '{name}' must be a {self.base.__name__}, got {type(item).__name__}")
        self._items[name] = item
        return item

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise ConfigError(f"unknown {self.what} '{name}'; known: {known}", field=self.field) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())
