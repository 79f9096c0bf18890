"""The ``hems`` entry point dispatches to the package that owns each command."""

from __future__ import annotations

import subprocess
import sys

from hems.cli import SUBCOMMANDS, main


def test_help_lists_every_command(capsys: object) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    for name in SUBCOMMANDS:
        assert f"  {name} " in out


def test_unknown_command_is_a_clear_error(capsys: object) -> None:
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "unknown command 'frobnicate'" in err


def test_console_script_runs_as_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hems", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert "usage: hems" in done.stdout
