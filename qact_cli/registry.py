"""One registry style for every named family of objects (models, activations, datasets), as timm's:
a decorator fills a table; a lookup takes a name or the registered object itself, and an unknown
name is a usage error that suggests the nearest one.

    ACTS = Registry("activation")

    @ACTS.register("relu")
    def relu(num_features): ...

    ACTS.get("relu") is ACTS.get(relu) is relu
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import UsageError
from .suggest import unknown

T = TypeVar("T")


class UnknownName(UsageError, ValueError):
    """An unknown registered name: a usage error for the CLI (exit 2), and a ValueError for library
    callers that caught the ValueError the lookups raised before there was one registry style."""


class Registry(Generic[T]):
    """A name -> entry table. `what` names the kind of entry in error messages ("activation", "--arch")."""

    def __init__(self, what: str):
        self.what = what
        self._table: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._table:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._table[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under `name` and return it unchanged."""
        return lambda entry: self.add(name, entry)

    def get(self, key: str | T, what: str | None = None) -> T:
        """The entry for a name; an entry passed in is returned as it is. Unknown names raise
        UnknownName with a did-you-mean; `what` overrides the kind named in that message."""
        if not isinstance(key, str):
            return key
        try:
            return self._table[key]
        except KeyError:
            raise UnknownName(unknown(what or self.what, key, self._table)) from None

    def name_of(self, entry: object) -> str | None:
        """The name an entry (or a name) is registered under, or None for an unregistered object."""
        if isinstance(entry, str):
            return entry if entry in self._table else None
        return next((n for n, e in self._table.items() if e is entry), None)

    def names(self) -> list[str]:
        return list(self._table)

    def items(self):
        return self._table.items()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)
