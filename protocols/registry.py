"""A registry of protocol entries (ECHONET Lite classes, SunSpec models), keyed by their number.

Telegraf's plug-in layout: each entry is one module that registers itself with one call at import, and
a package lists its modules, one import line each.  Everything that needs the entries (the emulator,
the collector) reads them here at the moment it needs them, so an entry registered later (a plug-in,
or a test's own class inside ``temporarily``) is seen by everything built after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from protocols.errors import RegistryError

K = TypeVar("K")
V = TypeVar("V")


class Registry(Mapping[K, V], Generic[K, V]):
    """Read like a dict (``registry[key]``, ``key in registry``, iteration in registration order);
    written only through ``register``.  ``version`` changes with every change, for derived caches."""

    def __init__(self, what: str, key: Callable[[V], K], describe: Callable[[K], str] = str) -> None:
        self.what = what
        self._key = key
        self._describe = describe
        self._entries: dict[K, V] = {}
        self.version = 0

    def register(self, entry: V) -> V:
        """Add ``entry``; a second entry under the same key is refused, never silently replaced."""
        key = self._key(entry)
        if key in self._entries:
            raise RegistryError(f"{self.what} {self._describe(key)} is already registered")
        self._entries[key] = entry
        self.version += 1
        return entry

    def unregister(self, key: K) -> None:
        if self._entries.pop(key, None) is None:
            raise RegistryError(f"{self.what} {self._describe(key)} is not registered")
        self.version += 1

    @contextlib.contextmanager
    def temporarily(self, entry: V) -> Iterator[V]:
        """Registered inside the block only: how a test adds its own entry without leaking it into
        other tests of the same process."""
        self.register(entry)
        try:
            yield entry
        finally:
            self.unregister(self._key(entry))

    def __getitem__(self, key: K) -> V:
        try:
            return self._entries[key]
        except KeyError:
            known = ", ".join(self._describe(k) for k in self._entries)
            raise KeyError(f"no {self.what} {self._describe(key)} is registered (known: {known})") from None

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries
