"""The seeds load, say what the terms say, and every malformed seed is refused with a precise error."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from seeds.loader import SEEDS_DIR, Clause, SeedError, load_seeds
from seeds.vocabulary import NEGAWATT_ITEMS, SERIES_CATEGORIES

JAPANESE = re.compile(
    "[\u203b\u2460-\u24ff\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
)

# Every section of the two primary documents that the guide (/work/shared/seeds/README.md) names.
EXPECTED_SECTIONS = {
    "sps": {
        "2(2)[1]",
        "2(2)[2]",
        "2(2)[3]",
        "2(2)[4]",
        "2(3)",
        "2(4)",
        "2(5)[1]",
        "2(6)",
        "2(6)[2]",
        "2(6)[3]",
    },
    "enex": {f"2({n})" for n in range(1, 13)}
    | {"2 footnote *2", "2 footnote *3", "3", "5 joint use (1)", "5 joint use (2)", "6"},
}


@pytest.fixture(scope="module")
def seeds() -> Any:
    return load_seeds()


def test_shipped_seeds_load_with_all_five_documents(seeds: Any) -> None:
    ids = {d.id for d in seeds.documents}
    assert ids == {"sps", "enex", "kaluza", "xoom", "sobu_gas"}
    sources = {d.id: d.source_file for d in seeds.documents}
    assert sources["sps"] == "001_4ecf3d1ab9fe8c23.txt"
    assert sources["enex"] == "003_c22193c221c492ef.txt"
    assert sources["kaluza"] == "000_a7a5341eb4531e65.txt"
    assert sources["xoom"] == "002_cbb86f7c2a9ab0e7.txt"
    assert sources["sobu_gas"] == "004_598e4b91479fbf47.txt"
    for doc in seeds.documents:
        assert seeds.clauses_of(doc.id), doc.id


@pytest.mark.parametrize("doc", sorted(EXPECTED_SECTIONS))
def test_every_section_named_by_the_guide_is_present(seeds: Any, doc: str) -> None:
    present = {c.section for c in seeds.clauses_of(doc)}
    assert EXPECTED_SECTIONS[doc] - present == set()


def test_clause_ids_unique_and_prefixed_by_their_document(seeds: Any) -> None:
    ids = [c.id for c in seeds.clauses]
    assert len(ids) == len(set(ids))
    for c in seeds.clauses:
        assert re.fullmatch(rf"{c.document}-\d+(\.\d+)*(\.[a-z][a-z0-9_]*)?", c.id), c.id
        assert seeds.clause(c.id) is c
    with pytest.raises(KeyError):
        seeds.clause("sps-9.9")


def test_every_referenced_purpose_is_declared_and_belongs_to_a_loaded_document(seeds: Any) -> None:
    docs = {d.id for d in seeds.documents}
    for c in seeds.clauses:
        for pid in c.purposes:
            assert pid in seeds.purposes, (c.id, pid)
    for pid, purpose in seeds.purposes.items():
        assert pid.split(".")[0] in docs
        assert purpose.document == pid.split(".")[0]


def test_statistics_only_purposes_are_exactly_those_the_terms_mark(seeds: Any) -> None:
    marked = {pid for pid, p in seeds.purposes.items() if p.statistics_only}
    # ENEX 2(7) marketing and 2(10) management analysis (footnote *2); ENEX joint use (2) reuses them.
    # XOOM's reports to regulators are the only other data the terms restrict to identifier-free statistics.
    assert marked == {"enex.marketing", "enex.management_analysis", "xoom.regulatory_statistics"}
    for c in seeds.clauses:
        if c.grants and set(c.purposes) & marked:
            assert c.actions == ("read_stats",), c.id
            assert c.conditions.statistics_only, c.id


def test_no_japanese_in_any_english_field_nor_anywhere_in_the_files(seeds: Any) -> None:
    texts: list[str] = []
    for d in seeds.documents:
        texts += [d.company, d.title]
    for p in seeds.purposes.values():
        texts.append(p.summary)
    for c in seeds.clauses:
        texts += [c.summary, c.section]
    assert texts
    for text in texts:
        assert not JAPANESE.search(text), text
    for path in SEEDS_DIR.glob("*.yaml"):
        assert not JAPANESE.search(path.read_text(encoding="utf-8")), path.name


def test_sps_2_2_4_records_the_maintenance_provision_exactly(seeds: Any) -> None:
    c: Clause = seeds.clause("sps-2.2.4")
    assert c.section == "2(2)[4]"
    assert c.kind == "provision_to_third_parties"
    assert c.grants
    assert set(c.recipients) == {
        "sales_company",
        "installer",
        "wholesaler",
        "approved_company",
        "designated_body",
    }
    # items (1),(2) identity, (3) contract, (4) equipment, (5) the series, (6) household
    assert set(c.data_categories) == {"identity", "contract", "equipment", "household"} | (
        set(SERIES_CATEGORIES) - {"ev"}
    )
    assert c.purposes == ("sps.pv_after_maintenance",)
    assert c.actions == ("read",)
    assert c.conditions.relationship == "own_households"
    assert "suspension_overrides" in c.limits


def test_sps_first_party_uses_are_the_operator_only(seeds: Any) -> None:
    for cid in ("sps-2.2.1", "sps-2.2.2", "sps-2.2.3"):
        c = seeds.clause(cid)
        assert c.grants and c.recipients == ("operator",), cid
        assert c.kind == "purpose_of_use"
    assert seeds.clause("sps-2.2.1").conditions.after_contract_end


def test_clauses_that_name_no_grantee_grant_nothing(seeds: Any) -> None:
    # Entrustment: contractors act for the operator; 2(4) joint use names no joint users.
    for cid in ("sps-2.3", "sps-2.4", "enex-4"):
        c = seeds.clause(cid)
        assert not c.grants and c.actions == () and c.recipients == (), cid


def test_person_rights_require_identity_check_and_sps_2_6_carries_the_suspension_override(seeds: Any) -> None:
    rights = [c for c in seeds.clauses_of("sps") if c.kind == "right_of_person"]
    assert rights and all(c.conditions.identity_check for c in rights)
    assert {"suspension_overrides", "suspension_of_use", "suspension_of_provision"} <= set(
        seeds.clause("sps-2.6").limits
    )
    disclosure = seeds.clause("sps-2.6.2")
    assert disclosure.recipients == ("homeowner", "agent")  # 2(6)[3]: the person or their agent
    assert disclosure.conditions.relationship == "own_households"
    assert "partial_refusal_with_reasons" in disclosure.limits


def test_enex_joint_use_1_is_retailers_and_grid_operators_on_their_own_customers_without_usage(
    seeds: Any,
) -> None:
    c = seeds.clause("enex-5.1")
    assert set(c.recipients) == {"retailer", "grid_operator"}
    assert c.conditions.relationship == "own_households"
    assert "electricity" not in c.data_categories  # usage data is not a joint-use (1) item
    assert set(c.purposes) == {
        "enex.wheeling_contract",
        "enex.switching_cancellation",
        "enex.supply_point_check",
        "enex.grid_operations",
    }


def test_enex_hems_data_is_defined_as_smart_meter_electricity(seeds: Any) -> None:
    definition = seeds.clause("enex-2.fn3")
    assert definition.kind == "definition" and definition.data_categories == ("electricity",)
    assert seeds.clause("enex-2.8").purposes == ("enex.hems_data_service",)
    # Footnote *3's amount used and time of use; the grant of 2(8) is exactly what the definition lists.
    assert definition.items_of("electricity") == ("power_w", "import_wh_total")
    assert seeds.clause("enex-2.8").items_of("electricity") == definition.items_of("electricity")


REQUIREMENTS = {
    # requirement -> documents that must carry it (the guide's list for the secondary documents)
    "provision_records": {"kaluza"},
    "negawatt_items": {"xoom", "sobu_gas"},
    "safety_alarms": {"sobu_gas"},
    "remote_shutoff": {"sobu_gas"},
    "erasure_with_legal_hold": {"sobu_gas"},
}


@pytest.mark.parametrize("requirement", sorted(REQUIREMENTS))
def test_secondary_requirements_are_recorded(seeds: Any, requirement: str) -> None:
    docs = {c.document for c in seeds.clauses if c.requirement == requirement}
    assert REQUIREMENTS[requirement] <= docs


def test_negawatt_grants_go_to_dr_aggregators_for_their_own_customers_only(seeds: Any) -> None:
    negawatt = [c for c in seeds.clauses if c.requirement == "negawatt_items"]
    assert {c.id for c in negawatt} == {"xoom-7.1.negawatt", "sobu_gas-4.2.negawatt"}
    for c in negawatt:
        assert c.grants and c.recipients == ("dr_aggregator",)
        assert c.conditions.relationship == "own_households"
        assert "electricity" in c.data_categories
        assert c.items_of("electricity") == NEGAWATT_ITEMS  # not the power curve


def test_erasure_keeps_what_the_law_requires(seeds: Any) -> None:
    c = seeds.clause("sobu_gas-7")
    assert c.kind == "right_of_person" and c.conditions.legal_hold and c.conditions.identity_check
    assert {"erasure", "legal_hold_exception"} <= set(c.limits)
    # The categories an erasure keeps come from retention clauses only: the right itself holds nothing,
    # otherwise an erasure would erase nothing at all.
    held = {cat for x in seeds.clauses if x.conditions.legal_hold for cat in x.data_categories}
    assert held == {"contract", "equipment"}
    assert all(x.kind == "retention" for x in seeds.clauses if x.conditions.legal_hold and x.data_categories)


def test_named_joint_users_and_recipients_grant_only_through_a_registration(seeds: Any) -> None:
    """The joint users and recipients the terms name one by one (ENEX's group and partners, Kaluza's
    retailer, car maker and parent, XOOM's procurement, subsidy and collection companies, Sobu Gas's
    group companies) benefit only once their company registers them for that clause."""
    named = {c.id for c in seeds.clauses if c.conditions.named_recipients}
    assert named >= {
        "enex-5.2",
        "kaluza-2.2",
        "kaluza-3.1",
        "kaluza-3.2",
        "kaluza-3.3",
        "xoom-7.2",
        "xoom-7.3",
        "xoom-7.4",
        "sobu_gas-4.1",
    }
    assert all(seeds.clause(cid).grants for cid in named)
    assert not any("recipient_kind_missing" in c.limits for c in seeds.clauses)


def test_granting_clauses_are_complete(seeds: Any) -> None:
    granting = list(seeds.granting())
    assert granting
    for c in granting:
        assert c.recipients and c.actions and c.purposes and c.data_categories, c.id
    for c in seeds.clauses:
        if not c.grants:
            assert c.actions == (), c.id


def test_conditions_read_as_attributes_or_keys(seeds: Any) -> None:
    cond = seeds.clause("sps-2.2.4").conditions
    assert cond["relationship"] == cond.relationship == "own_households"
    assert cond.get("nonexistent", "x") == "x"
    with pytest.raises(KeyError):
        cond["nonexistent"]


def test_loads_from_another_directory(tmp_path: Path) -> None:
    shutil.copy(SEEDS_DIR / "sps.yaml", tmp_path / "sps.yaml")
    loaded = load_seeds(tmp_path)
    assert [d.id for d in loaded.documents] == ["sps"]
    assert loaded.documents[0].path == tmp_path / "sps.yaml"


# --- invalid seeds -------------------------------------------------------------------------------


def _valid() -> dict[str, Any]:
    return {
        "document": {
            "id": "demo",
            "company": "Demo Power",
            "source_file": "001_4ecf3d1ab9fe8c23.txt",
            "title": "A test document",
        },
        "purposes": [
            {"id": "demo.care", "summary": "Maintenance of the equipment.", "statistics_only": False},
            {"id": "demo.stats", "summary": "Statistics only.", "statistics_only": True},
        ],
        "clauses": [
            {
                "id": "demo-2.1",
                "section": "2(1)",
                "kind": "provision_to_third_parties",
                "summary": "The installer sees the PV series of its own customers.",
                "data_categories": ["pv"],
                "recipients": ["installer"],
                "purposes": ["demo.care"],
                "actions": ["read"],
                "grants": True,
                "conditions": {"relationship": "own_households"},
                "limits": [],
                "requirement": None,
            },
            {
                "id": "demo-3",
                "section": "3",
                "kind": "safeguard",
                "summary": "Access is managed.",
                "grants": False,
                "actions": [],
            },
        ],
    }


def _write(tmp_path: Path, seed: dict[str, Any], name: str = "demo.yaml") -> Path:
    (tmp_path / name).write_text(yaml.safe_dump(seed, allow_unicode=True), encoding="utf-8")
    return tmp_path


def test_minimal_valid_seed_loads(tmp_path: Path) -> None:
    loaded = load_seeds(_write(tmp_path, _valid()))
    assert [c.id for c in loaded.clauses] == ["demo-2.1", "demo-3"]
    assert loaded.clause("demo-3").conditions.relationship == "any"


def _set(path: str, value: Any) -> Any:
    """A mutation of the valid seed: set ``path`` (dotted, list indices as digits) to ``value``."""

    def apply(seed: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = seed
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return apply


_DELETE = object()


def _combine(*mutations: Any) -> Any:
    def apply(seed: dict[str, Any]) -> None:
        for m in mutations:
            m(seed)

    return apply


INVALID = [
    # (mutation, expected clause in the error, expected field in the error, words in the message)
    (
        "unknown category",
        _set("clauses.0.data_categories", ["pv", "solar"]),
        "demo-2.1",
        "data_categories",
        "solar",
    ),
    ("unknown recipient", _set("clauses.0.recipients", ["plumber"]), "demo-2.1", "recipients", "plumber"),
    ("unknown action", _set("clauses.0.actions", ["delete"]), "demo-2.1", "actions", "delete"),
    ("unknown kind", _set("clauses.0.kind", "promise"), "demo-2.1", "kind", "promise"),
    ("undeclared purpose", _set("clauses.0.purposes", ["demo.sales"]), "demo-2.1", "purposes", "demo.sales"),
    ("missing summary", _set("clauses.0.summary", _DELETE), "demo-2.1", "summary", "missing"),
    ("empty summary", _set("clauses.0.summary", "  "), "demo-2.1", "summary", "missing"),
    (
        "japanese summary",
        _set("clauses.0.summary", "Sales company (販売会社) reads."),
        "demo-2.1",
        "summary",
        "Japanese",
    ),
    ("japanese title", _set("document.title", "Privacy ポリシー"), None, "document.title", "Japanese"),
    ("japanese purpose", _set("purposes.0.summary", "Care ※"), "demo.care", "purposes.summary", "Japanese"),
    ("grant without recipients", _set("clauses.0.recipients", []), "demo-2.1", "recipients", "granting"),
    ("grant without actions", _set("clauses.0.actions", []), "demo-2.1", "actions", "granting"),
    (
        "grant without categories",
        _set("clauses.0.data_categories", []),
        "demo-2.1",
        "data_categories",
        "granting",
    ),
    ("non-grant with actions", _set("clauses.1.actions", ["read"]), "demo-3", "actions", "non-granting"),
    ("grants not boolean", _set("clauses.0.grants", "yes"), "demo-2.1", "grants", "true or false"),
    ("bad clause id", _set("clauses.0.id", "other-2.1"), "other-2.1", "id", "must look like"),
    ("japanese section", _set("clauses.0.section", "2(2)④"), "demo-2.1", "section", "ASCII"),
    ("unknown field", _set("clauses.0.recipient", ["installer"]), "demo-2.1", "recipient", "unknown field"),
    (
        "bad relationship",
        _set("clauses.0.conditions.relationship", "friends"),
        "demo-2.1",
        "conditions.relationship",
        "friends",
    ),
    (
        "bad group size",
        _set("clauses.0.conditions.min_group_size", 1),
        "demo-2.1",
        "conditions.min_group_size",
        ">= 2",
    ),
    (
        "unknown condition",
        _set("clauses.0.conditions.consent", True),
        "demo-2.1",
        "conditions.consent",
        "unknown",
    ),
    (
        "read on stats purpose",
        _set("clauses.0.purposes", ["demo.stats"]),
        "demo-2.1",
        "actions",
        "statistics-only",
    ),
    (
        "stats clause reading",
        _set("clauses.0.conditions.statistics_only", True),
        "demo-2.1",
        "actions",
        "read_stats",
    ),
    ("purpose of another doc", _set("purposes.0.id", "sps.care"), None, "purposes.id", "demo."),
    ("doc id not file name", _set("document.id", "other"), None, "document.id", "file name"),
    ("bad source file", _set("document.source_file", "terms.pdf"), None, "document.source_file", "terms.pdf"),
    ("missing clauses", _set("clauses", _DELETE), None, "clauses", "missing"),
    (
        "bad requirement",
        _set("clauses.0.requirement", "Provision Records"),
        "demo-2.1",
        "requirement",
        "lower_case",
    ),
    ("bad limit", _set("clauses.0.limits", ["No IDs"]), "demo-2.1", "limits", "lower_case"),
    (
        "repeated word",
        _set("clauses.0.data_categories", ["pv", "pv"]),
        "demo-2.1",
        "data_categories",
        "repeats",
    ),
    # Items below categories: each a field of the field table that the category carries.
    (
        "item not a field",
        _set("clauses.0.data_items", {"pv": ["yield_w"]}),
        "demo-2.1",
        "data_items.pv",
        "yield_w",
    ),
    (
        "item of another category",
        _set("clauses.0.data_items", {"pv": ["soc_pct"]}),
        "demo-2.1",
        "data_items.pv",
        "not an item of pv",
    ),
    (
        "items of a category not granted",
        _set("clauses.0.data_items", {"battery": ["soc_pct"]}),
        "demo-2.1",
        "data_items.battery",
        "not among",
    ),
    ("empty items", _set("clauses.0.data_items", {"pv": []}), "demo-2.1", "data_items.pv", "non-empty"),
    (
        "negawatt clause with the power curve",
        _combine(
            _set("clauses.0.data_categories", ["electricity"]),
            _set("clauses.0.limits", ["negawatt_items_only"]),
            _set("clauses.0.data_items", {"electricity": ["baseline_w", "power_w"]}),
        ),
        "demo-2.1",
        "data_items",
        "negawatt items only",
    ),
    (
        "negawatt clause without items",
        _combine(
            _set("clauses.0.data_categories", ["electricity"]),
            _set("clauses.0.limits", ["negawatt_items_only"]),
        ),
        "demo-2.1",
        "data_items",
        "negawatt items only",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "clause", "field", "words"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_seed_is_refused_naming_file_clause_and_field(
    tmp_path: Path, case: str, mutate: Any, clause: str | None, field: str, words: str
) -> None:
    seed = _valid()
    mutate(seed)
    with pytest.raises(SeedError) as info:
        load_seeds(_write(tmp_path, seed))
    err = info.value
    assert err.file == "demo.yaml"
    assert err.clause == clause
    assert err.field == field
    assert words in str(err)
    assert "demo.yaml" in str(err)


def test_duplicate_clause_id_is_refused(tmp_path: Path) -> None:
    twice = _valid()
    twice["clauses"].append(dict(twice["clauses"][1]))
    with pytest.raises(SeedError) as info:
        load_seeds(_write(tmp_path, twice))
    assert info.value.clause == "demo-3" and info.value.field == "id" and "duplicate" in str(info.value)


def test_two_files_cannot_claim_the_same_document(tmp_path: Path) -> None:
    _write(tmp_path, _valid())
    _write(tmp_path, _valid(), "more.yaml")  # says id: demo, so its name disagrees first
    with pytest.raises(SeedError) as info:
        load_seeds(tmp_path)
    assert info.value.file == "more.yaml" and info.value.field == "document.id"


def test_duplicate_purpose_is_refused(tmp_path: Path) -> None:
    seed = _valid()
    seed["purposes"].append(dict(seed["purposes"][0]))
    with pytest.raises(SeedError) as info:
        load_seeds(_write(tmp_path, seed))
    assert info.value.field == "purposes.id" and "demo.care" in str(info.value)


def test_not_yaml_and_empty_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match="no seed files"):
        load_seeds(tmp_path)
    (tmp_path / "demo.yaml").write_text("document: [unclosed\n", encoding="utf-8")
    with pytest.raises(SeedError, match="not valid YAML") as info:
        load_seeds(tmp_path)
    assert info.value.file == "demo.yaml"
    (tmp_path / "demo.yaml").write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(SeedError, match="top level"):
        load_seeds(tmp_path)
