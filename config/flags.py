"""Command-line options that may also come from the file: ``[serve]``, ``[demo]``, ``[devices]``.

A command's parser is the schema of its section: each key is an option's ``dest`` (``page_cache_mb``
for ``--page-cache-mb``) and takes what the option takes, so an option added to a parser is settable
from the file with nothing else to write.  A flag given on the command line wins over the file; the
file wins over the parser's default.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

from config.loader import ConfigFile, read
from config.typed import check_value

_FLAG_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        a.dest: a
        for a in parser._actions
        if a.option_strings and a.dest not in ("help", "config") and a.default != argparse.SUPPRESS
    }


def _value(action: argparse.Action, value: Any, cfile: ConfigFile, section: str, key: str) -> Any:
    if isinstance(action, _FLAG_ACTIONS):
        return check_value(value, bool, file=cfile.path, section=section, key=key)
    kind = action.type
    if kind is None or kind in (str, int, float):
        value = check_value(value, kind or str, file=cfile.path, section=section, key=key)
    else:  # a converter such as Path or an ISO date parser: give it the text argparse would
        if isinstance(value, bool) or not isinstance(value, str | int | float | datetime):
            raise cfile.error(f"expected text, a number or a date, got {value!r}", section=section, key=key)
        try:
            value = cast(Callable[[str], Any], kind)(str(value))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            raise cfile.error(str(exc), section=section, key=key) from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(repr(c) for c in action.choices)
        raise cfile.error(f"must be one of {choices}, got {value!r}", section=section, key=key)
    return value


def section_defaults(parser: argparse.ArgumentParser, cfile: ConfigFile, section: str) -> dict[str, Any]:
    """The ``[section]`` table checked against ``parser``'s options."""
    options = _options(parser)
    out: dict[str, Any] = {}
    for key, value in cfile.section(section).items():
        action = options.get(key)
        if action is None:
            raise cfile.error(
                f"unknown setting; known: {', '.join(sorted(options))}", section=section, key=key
            )
        out[key] = _value(action, value, cfile, section, key)
    return out


def parse_args_with_config(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, section: str
) -> tuple[argparse.Namespace, ConfigFile]:
    """Parse ``argv`` with ``--config FILE``'s ``[section]`` as the defaults; returns the options and
    the file (for the other sections the command reads).  ``parser`` must have a ``--config``."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    cfile = read(known.config)
    defaults = section_defaults(parser, cfile, section)
    for action in parser._actions:
        if action.dest in defaults:
            action.required = False  # the file gave it
    parser.set_defaults(**defaults)
    return parser.parse_args(argv), cfile
