"""``hems policy|ledger|principals|serve`` through the real entry point."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from access.cli import main
from access.compiler import Policy
from access.db import AccessDb
from hems.cli import main as hems_main
from tests.access.conftest import PV, World
from tests.access.raw_db import tamper


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = hems_main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_policy_show_lists_every_rule_with_its_clause(
    capsys: pytest.CaptureFixture[str], policy: Policy
) -> None:
    code, out = _run(capsys, "policy", "show", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == len(policy.rules)
    assert all(row["clause"] for row in rows)
    assert {"sub": "sps-2.2.4/installer", "dom": "linked", "cat": "pv", "act": "read", "pur": PV} in [
        {k: row[k] for k in ("sub", "dom", "cat", "act", "pur")} for row in rows
    ]
    code, table = _run(capsys, "policy", "show")
    assert code == 0 and "sps-2.2.4" in table and table.splitlines()[0].split()[-1] == "clause"


def test_policy_check_passes_on_the_shipped_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "policy", "check")
    assert code == 0
    assert out.splitlines()[-1].startswith("ok: ")


def test_policy_explain_against_a_database(capsys: pytest.CaptureFixture[str], world: World) -> None:
    args = ["policy", "explain", "--principal", "inst1", "--household", "h1", "--category", "pv"]
    args += ["--action", "read", "--purpose", PV, "--db", str(world.path), "--at", "2026-06-01T00:00:00Z"]
    code, out = _run(capsys, *args)
    assert code == 0
    assert "Roof Installers (installer) may read the pv data of household h1" in out
    assert "it installed h1" in out and "2(2)[4]" in out and "decision: allow (sps-2.2.4)" in out
    # Companies and periods: the contract the grant rests on, and what is served.
    assert "h1 is under contract with Smart Power System (since 2025-01-01 09:00 JST)" in out
    assert "served: since 2025-01-01 09:00 JST" in out
    args[args.index("--household") + 1] = "h2"
    code, out = _run(capsys, *args)
    assert "may not read" in out and "no relationship with household h2" in out and "decision: deny" in out


def test_policy_explain_shows_the_period_served_and_why_the_rest_is_not(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    world.rel.add_principal("inst9", "installer", "New Installer", [PV])
    world.rel.link("inst9", "h1", "installer", since="2026-05-20T00:00:00Z")
    args = ["policy", "explain", "--principal", "inst9", "--household", "h1", "--category", "pv"]
    args += ["--action", "read", "--purpose", PV, "--db", str(world.path), "--at", "2026-06-01T00:00:00Z"]
    args += ["--start", "2026-05-01T00:00:00Z", "--stop", "2026-06-01T00:00:00Z"]
    code, out = _run(capsys, *args)
    assert code == 0 and "decision: allow (sps-2.2.4)" in out
    assert "served: 2026-05-20 09:00 JST to 2026-06-01 09:00 JST" in out
    assert "not served: 2026-05-01 09:00 JST to 2026-05-20 09:00 JST" in out
    assert "its installer link holds since 2026-05-20 09:00 JST" in out


def test_policy_explain_the_persons_rights_need_a_verified_identity(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    args = ["policy", "explain", "--principal", "alice", "--household", "h1", "--category", "pv"]
    args += ["--action", "read", "--purpose", "sps.disclosure_to_person", "--db", str(world.path)]
    args += ["--at", "2026-06-01T00:00:00Z"]
    _, out = _run(capsys, *args)
    assert "identity verified recently" in out and "decision: deny" in out
    _, out = _run(capsys, *args, "--identity-verified")
    assert "decision: allow (sps-2.6.2)" in out and "they are the homeowner of h1" in out


def test_policy_explain_without_a_database_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = [
        "policy",
        "explain",
        "--principal",
        "x",
        "--household",
        "h",
        "--category",
        "pv",
        "--action",
        "read",
    ]
    code, out = _run(capsys, *args, "--purpose", PV, "--db", str(tmp_path / "none.sqlite"))
    assert code == 2 and "no access database" in out


def test_ledger_verify_and_list(capsys: pytest.CaptureFixture[str], world: World) -> None:
    world.ledger.record("inst1", "h1", ["pv"], 0, 3600, PV, ["sps-2.2.4"], at=7200)
    world.ledger.record("sales1", "h2", ["battery"], 0, 3600, PV, ["sps-2.2.4"], at=7300)
    code, out = _run(capsys, "ledger", "verify", "--db", str(world.path))
    assert code == 0 and out.startswith("ok: 2 records")
    code, out = _run(capsys, "ledger", "list", "--household", "h1", "--db", str(world.path))
    assert code == 0 and "inst1" in out and "sales1" not in out and "1 records" in out
    tamper(world.path, "UPDATE provision_ledger SET household = 'h9' WHERE seq = 1")
    code, out = _run(capsys, "ledger", "verify", "--db", str(world.path))
    assert code == 1 and "TAMPERED at record 1" in out


def test_default_db_follows_hems_data_dir(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HEMS_DATA_DIR", str(tmp_path))
    code, out = _run(capsys, "ledger", "verify")
    assert code == 2 and str(tmp_path / "access.sqlite") in out


@pytest.mark.parametrize("command", ["principals", "serve"])
def test_api_commands_reject_unknown_options(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out = _run(capsys, command, "--no-such-option")
    assert code == 2 and f"hems {command}" in out


def test_usage_errors_return_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "frobnicate"]) == 2
    assert main([]) == 2
    capsys.readouterr()


def test_policy_check_fails_on_broken_seeds_naming_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "sps.yaml").write_text("document: {id: sps}\npurposes: []\nclauses: []\n")
    code, out = _run(capsys, "policy", "--seeds", str(tmp_path), "check")
    assert code == 1 and "sps.yaml" in out


def test_policy_show_with_a_database_adds_approval_lines(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    code, out = _run(capsys, "policy", "show", "--format", "csv", "--db", str(world.path))
    assert code == 0
    assert (
        "sps-2.2.4/approval:1/sales_company,approved,pv,read,sps.pv_after_maintenance,allow,none,sps-2.2.4"
        in out
    )
    # Only what the approver's role holds: ev is not an SPS 2(2)[4] item, whatever the approval says.
    assert "approval:1/sales_company,approved,ev" not in out
    code, out = _run(capsys, "policy", "show", "--format", "markdown", "--db", str(world.path))
    assert "| approved_company | sps | approved | approval within the approver's link and contract" in out


def test_principals_and_ledger_find_the_demos_database_or_say_none_is_there(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_world: World
) -> None:
    """One data-directory rule: with ``HEMS_DATA_DIR`` (as ``hems demo`` uses it) the commands open the
    demo's database; pointed at an empty directory they fail naming the file, creating nothing."""
    from access.cli import data_dir

    empty = tmp_path / "empty"
    monkeypatch.setenv("HEMS_DATA_DIR", str(empty))
    for argv in (
        ("principals", "list"),
        ("principals", "token", "list"),
        ("ledger", "list", "--household", "h1"),
    ):
        code, out = _run(capsys, *argv)
        assert code == 2 and str((empty / "access.sqlite").resolve()) in out, (argv, out)
    assert not (empty / "access.sqlite").exists()
    world = sqlite_world
    assert isinstance(world.path, Path)
    monkeypatch.setenv("HEMS_DATA_DIR", str(world.path.parent))
    assert data_dir() == world.path.parent
    code, out = _run(capsys, "principals", "list")
    assert code == 0 and "inst1\tinstaller" in out
    code, out = _run(capsys, "ledger", "verify")
    assert code == 0 and out.startswith("ok")


def test_principals_manage_companies_periods_contracts_joint_uses_and_mandates(
    capsys: pytest.CaptureFixture[str], access_db: AccessDb
) -> None:
    db = str(access_db)

    def run(*argv: str) -> str:
        code, out = _run(capsys, "principals", "--db", db, *argv)
        assert code == 0, out
        return out

    run("add", "gas-ops", "--kind", "operator", "--name", "Gas Ops", "--company", "sobu_gas")
    code, out = _run(capsys, "principals", "--db", db, "add", "op2", "--kind", "operator", "--name", "X")
    assert code == 1 and "one company" in out
    run("add", "carol", "--kind", "homeowner", "--name", "Carol", "--purpose", "sps.disclosure_to_person")
    assert "linked carol to h1 as homeowner from 2026-05-01" in run(
        "link", "carol", "h1", "homeowner", "--since", "2026-05-01T00:00:00Z"
    )
    out = run("contract", "add", "h1", "sobu_gas", "--kind", "supply", "--since", "2026-01-01T00:00:00Z")
    assert "h1 with sobu_gas (supply), 2026-01-01 09:00 JST to open-ended" in out
    run("contract", "end", "1", "--at", "2026-07-01T00:00:00Z")
    assert "2026-01-01 09:00 JST to 2026-07-01 09:00 JST" in run("contract", "list", "h1")
    run("add", "group1", "--kind", "named_party", "--name", "ENEX Card", "--purpose", "enex.billing")
    assert "enex names group1 for enex-5.2" in run("joint-use", "add", "enex", "enex-5.2", "group1")
    code, out = _run(capsys, "principals", "--db", db, "joint-use", "add", "enex", "enex-5.1", "group1")
    assert code == 1 and "does not name its parties" in out
    run("add", "lawyer", "--kind", "agent", "--name", "Lawyer", "--purpose", "sps.disclosure_to_person")
    assert "not verified yet" in run("mandate", "add", "carol", "lawyer", "--category", "pv")
    assert "verified (power_of_attorney)" in run("mandate", "verify", "1", "--method", "power_of_attorney")
    assert "carol\tlawyer\tpv" in run("mandate", "list")
    assert "gas-ops\toperator\tsobu_gas" in run("list")
    assert "token" in run(
        "token",
        "create",
        "carol",
        "--purpose",
        "sps.disclosure_to_person",
        "--identity-verified",
        "documents",
    )


def test_policy_explain_names_items_and_says_which_are_granted(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    """ENEX 2(8) grants HEMS data as footnote *3 defines it: the amount used and the time of use."""
    args = ["policy", "explain", "--principal", "eop", "--household", "h1", "--category", "electricity"]
    args += ["--action", "read", "--purpose", "enex.hems_data_service", "--db", str(world.path)]
    args += ["--at", "2026-06-01T00:00:00Z"]
    code, out = _run(capsys, *args)
    assert code == 0 and "decision: deny (enex-2.8)" in out
    assert "grants only these items of electricity: power_w, import_wh_total" in out
    assert "items granted: power_w, import_wh_total" in out
    code, out = _run(capsys, *args, "--items", "power_w,raw_import_wh_total")
    assert "may read the electricity (power_w, import_wh_total) data of household h1" in out
    assert "decision: allow (enex-2.8)" in out
    code, out = _run(capsys, *args, "--items", "voltage_v")
    assert "decision: deny (enex-2.8)" in out and "not voltage_v" in out


def test_principals_budget_and_ledger_releases(capsys: pytest.CaptureFixture[str], world: World) -> None:
    from access.budget import BudgetStore

    db = str(world.path)
    code, out = _run(capsys, "principals", "--db", db, "budget", "ana")
    enex = "company enex (one budget for all its staff)"
    assert code == 0 and f"ana: privacy budget of {enex}: epsilon 3, spent 0 in 0 releases, left 3" in out
    code, out = _run(capsys, "principals", "--db", db, "budget", "ana", "5")
    assert code == 2 and "--by" in out
    code, out = _run(capsys, "principals", "--db", db, "budget", "ana", "5", "--by", "ops")
    assert code == 0 and "epsilon 5" in out
    code, out = _run(capsys, "principals", "--db", db, "budget", "eop")  # ENEX's operator: the same budget
    assert code == 0 and f"eop: privacy budget of {enex}: epsilon 5" in out
    code, out = _run(capsys, "principals", "--db", db, "budget", "pana")  # no company: its own
    assert code == 0 and "pana: privacy budget of pana: epsilon 3" in out
    budgets = BudgetStore(world.path)
    budgets.spend(
        "ana",
        "enex.marketing",
        "electricity",
        ["power_w"],
        (0.0, 3600.0),
        3600.0,
        1,
        0.5,
        ["enex-2.7"],
        holder="company:enex",
    )
    budgets.close()
    code, out = _run(capsys, "ledger", "releases", "--db", db, "--principal", "ana")
    assert code == 0 and "#1" in out and "ana released electricity (power_w)" in out and "epsilon 0.5" in out
    assert f"{enex}: spent 0.5 of 5, left 4.5" in out and "release chain intact" in out


def test_hems_access_db_names_the_database_for_every_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, world: World
) -> None:
    """``$HEMS_ACCESS_DB`` (a file or a PostgreSQL URL) is the database of every command without --db."""
    monkeypatch.setenv("HEMS_DATA_DIR", "/nonexistent")
    monkeypatch.setenv("HEMS_ACCESS_DB", str(world.path))
    code, out = _run(capsys, "principals", "list")
    assert code == 0 and "inst1\tinstaller" in out
    code, out = _run(capsys, "ledger", "verify")
    assert code == 0 and out.startswith("ok")


def test_a_password_in_the_url_is_refused_with_where_to_put_it(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://hems:secret@127.0.0.1:1/hems"
    for argv in (
        ("principals", "--db", url, "list"),
        ("ledger", "verify", "--db", url),
        ("serve", "--db", url),
    ):
        code, out = _run(capsys, *argv)
        assert code in (1, 2) and "PGPASSWORD" in out and "secret" not in out, (argv, out)
