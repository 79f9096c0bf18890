"""Which stores exist: one registration per store, read by everything that picks or tests a store.

Adding a store is one module and one line in ``_BUILTIN`` (or a ``register`` call at run time, from a
plugin or a test).  The factory (``open_store``), the ``[pipeline] store`` setting, ``hems serve
--store NAME``, the maintenance job of ``hems collect`` and the store conformance suite
(tests/pipeline/test_store_conformance.py) all work from this registry, so none of them branches on
a store's type.  A store's module is imported only when that store is opened or tested: the embedded
path never loads the InfluxDB client.

The module of a registered store exports ``STORE``, a ``StorePlugin``: how to open the store from the
pipeline settings and, optionally, a long-running maintenance job (SQLite's retention; InfluxDB runs
its own tasks).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the settings module validates ``store`` against this registry
    from pipeline.config import PipelineConfig
    from pipeline.store import Store


@dataclass(frozen=True)
class StorePlugin:
    """What a store module exports as ``STORE``."""

    open: Callable[[PipelineConfig], Store]
    maintain: Callable[[Store, PipelineConfig], Coroutine[Any, Any, None]] | None = None
    describe: Callable[[PipelineConfig], str] | None = None  # where the data goes, for start-up lines


@dataclass(frozen=True)
class Registration:
    name: str
    module: str
    # An outside server the store needs (its name is also a pytest marker and a fixture that gives its
    # settings): tests without that server report the store's cases as skipped.
    service: str | None = None


_BUILTIN = (
    Registration("sqlite", "pipeline.sqlite_store"),
    Registration("influx", "pipeline.influx_store", service="influxdb"),
)
_REGISTRY: dict[str, Registration] = {r.name: r for r in _BUILTIN}


def register(name: str, module: str, *, service: str | None = None) -> Registration:
    """Make ``module`` (which exports ``STORE``) selectable as ``name``; refuses a taken name."""
    if not name.isidentifier():
        raise ValueError(f"a store name is an identifier, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"store {name!r} is already registered ({_REGISTRY[name].module})")
    registration = Registration(name, module, service)
    _REGISTRY[name] = registration
    return registration


def unregister(name: str) -> None:
    """Remove a store registered at run time (the built-in ones stay)."""
    if any(r.name == name for r in _BUILTIN):
        raise ValueError(f"store {name!r} is built in")
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def registered() -> tuple[Registration, ...]:
    return tuple(_REGISTRY.values())


def plugin(name: str) -> StorePlugin:
    """The plugin of a registered store (imports its module)."""
    try:
        registration = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown store {name!r}; registered: {', '.join(_REGISTRY)}") from None
    found = getattr(importlib.import_module(registration.module), "STORE", None)
    if not isinstance(found, StorePlugin):
        raise TypeError(f"{registration.module} does not export STORE = StorePlugin(...)")
    return found


def open_store(cfg: PipelineConfig) -> Store:
    """The store ``cfg`` selects, built but not yet connected (see ``Store.open``)."""
    return plugin(cfg.store_name).open(cfg)


def maintenance(store: Store, cfg: PipelineConfig) -> Coroutine[Any, Any, None] | None:
    """The selected store's maintenance job to run beside the writer, or None if it needs none."""
    maintain = plugin(cfg.store_name).maintain
    return None if maintain is None else maintain(store, cfg)


def describe(cfg: PipelineConfig) -> str:
    """Where the selected store keeps the data (for start-up lines)."""
    found = plugin(cfg.store_name)
    return found.describe(cfg) if found.describe is not None else cfg.store_name
