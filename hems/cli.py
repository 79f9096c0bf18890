"""The ``hems`` command: one entry point that hands each subcommand to the package that owns it.

Each package keeps its own argument parser (``<package>.cli.main(argv) -> int``) so that adding an
option never means editing a central file owned by someone else.  An error a command raises on
purpose (``hems.errors.KNOWN_ERRORS``: a bad setting, a store schema from a newer release, a spool in
use) becomes one line and exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from hems.errors import KNOWN_ERRORS

# subcommand -> (module with ``main(argv)``, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("hems.demo", "emulated homes + collectors + embedded store + API on localhost"),
    "devices": ("devices.cli", "start emulated homes (Modbus/SunSpec + ECHONET Lite) and write a manifest"),
    "collect": ("hems.collect", "poll devices from a config or manifest into a store"),
    "serve": ("hems.serve", "serve the HTTP API and web views"),
    "policy": ("access.cli", "show / explain / check the access policy compiled from seeds/"),
    "ledger": ("access.cli", "list and verify the provision ledger"),
    "principals": ("access.cli", "add principals and manage their tokens"),
    "erasure": ("hems.erasure", "list erasure requests, carry one out (both stores), sweep erased ranges"),
    "access": ("access.cli", "the access database: migrate from SQLite to PostgreSQL"),
}

# Environment a subcommand's process wants before its modules load (they cannot set it themselves:
# reading it happens at import).  ``serve``: each worker process is one core's worth of requests, and
# a page is too small for polars' thread pool to pay for its hand-offs (measured: bench/api.py).
ENVIRONMENT: dict[str, dict[str, str]] = {"serve": {"POLARS_MAX_THREADS": "1"}}


def _usage() -> str:
    lines = ["usage: hems <command> [options]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run 'hems <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"hems: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    for key, value in ENVIRONMENT.get(name, {}).items():
        os.environ.setdefault(key, value)
    module = importlib.import_module(SUBCOMMANDS[name][0])
    # access.cli serves several top-level commands; it receives the command name first.
    forwarded = [name, *rest] if SUBCOMMANDS[name][0] == "access.cli" else rest
    try:
        result: int = module.main(forwarded)
    except KNOWN_ERRORS as exc:
        print(f"hems {name}: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    raise SystemExit(main())
