"""The README is a user's guide: its policy table and commands must match the code."""

from __future__ import annotations

from pathlib import Path

from access.cli import markdown_table
from access.compiler import compile_seeds
from hems.cli import SUBCOMMANDS
from seeds.loader import load_seeds

README = Path(__file__).resolve().parents[2] / "README.md"


def test_policy_table_is_the_compiled_policy() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- policy-table:start -->\n") + len("<!-- policy-table:start -->\n")
    stop = text.index("\n<!-- policy-table:end -->")
    policy = compile_seeds(load_seeds())
    expected = markdown_table(policy, policy.rules)
    assert text[start:stop] == expected, (
        "run: hems policy show --format markdown, and paste it into README.md"
    )


def test_every_command_is_documented() -> None:
    text = README.read_text(encoding="utf-8")
    for name in SUBCOMMANDS:
        assert f"`hems {name}" in text, name
