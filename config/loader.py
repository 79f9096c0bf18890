"""Reading the configuration file: it exists if named, it is TOML, its sections are known ones.

No file at all (``path is None``) means every default, which is what lets ``hems demo`` run with
nothing to set up.  A file that was named but cannot be read is an error: silently falling back to
defaults served ``./var/hems.sqlite`` to someone who had mistyped ``--config``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from config.errors import ConfigError

# The sections of the one file, in the order hems.example.toml shows them.  ``households`` is the
# collector's array of tables; the others are plain tables owned by the command or package named.
SECTIONS: Final = ("collector", "households", "pipeline", "fleet", "serve", "demo", "devices", "tariff")


@dataclass(frozen=True)
class ConfigFile:
    """A parsed file (``path`` None: no file, every section empty)."""

    path: str | None = None
    doc: Mapping[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Mapping[str, Any]:
        """The ``[name]`` table, empty when the file has none."""
        value = self.doc.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table", file=self.path, section=name)
        return value

    def error(self, message: str, *, section: str | None = None, key: str | None = None) -> ConfigError:
        return ConfigError(message, file=self.path, section=section, key=key)


def read(path: str | os.PathLike[str] | None) -> ConfigFile:
    """Parse ``path``; ``ConfigError`` if it cannot be read, is not TOML or has an unknown section."""
    if path is None:
        return ConfigFile()
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=name) from exc
    return parse(text, name)


def parse(text: str, name: str) -> ConfigFile:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not TOML: {exc}", file=name) from exc
    for key in doc:
        if key not in SECTIONS:
            raise ConfigError(f"unknown section; known: {', '.join(SECTIONS)}", file=name, section=key)
    return ConfigFile(name, doc)
