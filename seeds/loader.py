"""Load and validate the structured clauses of the five terms.

The seeds are the only place where the terms enter the product: the policy compiler trusts what this
module hands it.  So validation is strict and happens here, once, with errors that name the file, the
clause and the field -- the person fixing a seed is comparing it with the source document and needs to
know exactly which line of the YAML disagrees with the schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml

from seeds.vocabulary import ACTIONS, CATEGORIES, NEGAWATT_ITEMS, PRINCIPAL_KINDS, category_items, has_items

SEEDS_DIR: Final = Path(__file__).resolve().parent
# libyaml's loader is ~10x faster than the pure-Python one; the seeds are read at every start and in tests.
_YAML_LOADER: Final[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

CLAUSE_KINDS: Final = (
    "purpose_of_use",
    "provision_to_third_parties",
    "joint_use",
    "entrustment",
    "safeguard",
    "right_of_person",
    "definition",
    "statistics",
    "retention",
)
RELATIONSHIPS: Final = ("own_households", "any", "none")

_DOC_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_WORD_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_SOURCE_FILE = re.compile(r"^\d{3}_[0-9a-f]{16}\.txt$")
# A section reference is ASCII: digits, brackets, parentheses, a footnote star and a few words.
_SECTION = re.compile(r"^[A-Za-z0-9()\[\]*.,/ \-]+$")
# Hiragana, katakana, CJK ideographs, CJK punctuation, full-width forms, circled numbers, the
# reference mark: anything here means a sentence or term was copied rather than written in English.
_JAPANESE = re.compile(
    "[\u203b\u2460-\u24ff\u3000-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
)

_TOP_KEYS: Final = frozenset({"document", "purposes", "clauses"})
_DOC_KEYS: Final = frozenset({"id", "company", "source_file", "title"})
_PURPOSE_KEYS: Final = frozenset({"id", "summary", "statistics_only"})
_CLAUSE_KEYS: Final = frozenset(
    {
        "id",
        "section",
        "kind",
        "summary",
        "data_categories",
        "data_items",
        "recipients",
        "purposes",
        "actions",
        "grants",
        "conditions",
        "limits",
        "requirement",
    }
)
_CONDITION_KEYS: Final = frozenset(
    {
        "relationship",
        "statistics_only",
        "min_group_size",
        "identity_check",
        "after_contract_end",
        "legal_hold",
        "named_recipients",
    }
)
_MAX_SUMMARY: Final = 700


class SeedError(ValueError):
    """A seed file disagrees with the schema; the message names file, clause and field."""

    def __init__(self, file: str, clause: str | None, field_name: str | None, problem: str) -> None:
        self.file = file
        self.clause = clause
        self.field = field_name
        self.problem = problem
        where = file
        if clause is not None:
            where += f": clause {clause}"
        if field_name is not None:
            where += f": field {field_name}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Document:
    id: str
    company: str
    source_file: str
    title: str
    path: Path


@dataclass(frozen=True)
class Purpose:
    id: str
    summary: str
    statistics_only: bool
    document: str


@dataclass(frozen=True)
class Conditions:
    """Conditions on a clause; also readable like a mapping so callers may use either style."""

    relationship: str = "any"
    statistics_only: bool = False
    min_group_size: int | None = None
    identity_check: bool = False
    after_contract_end: bool = False
    legal_hold: bool = False
    # Only the parties the company registered for this clause (a named joint user or recipient, with a
    # period) benefit; the company's own staff always do.
    named_recipients: bool = False

    def __getitem__(self, name: str) -> object:
        if name not in _CONDITION_KEYS:
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: object = None) -> object:
        return getattr(self, name) if name in _CONDITION_KEYS else default


@dataclass(frozen=True)
class Clause:
    id: str
    section: str
    kind: str
    summary: str
    data_categories: tuple[str, ...]
    recipients: tuple[str, ...]
    purposes: tuple[str, ...]
    actions: tuple[str, ...]
    grants: bool
    conditions: Conditions
    limits: tuple[str, ...]
    requirement: str | None
    document: str
    # (category, the items of the field table the clause names) pairs; a category listed in
    # data_categories but not here is meant whole.  Pairs, not a dict, so a clause stays hashable.
    data_items: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def items_of(self, category: str) -> tuple[str, ...] | None:
        """The items of ``category`` the clause names, or None when it means the whole category."""
        for name, items in self.data_items:
            if name == category:
                return items
        return None


@dataclass(frozen=True)
class Seeds:
    documents: tuple[Document, ...]
    clauses: tuple[Clause, ...]
    purposes: Mapping[str, Purpose]
    _by_id: Mapping[str, Clause] = field(repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        # Read-only views: a policy compiled from these seeds must not drift from what was validated.
        object.__setattr__(self, "purposes", MappingProxyType(dict(self.purposes)))
        object.__setattr__(self, "_by_id", MappingProxyType(dict(self._by_id)))

    def clause(self, clause_id: str) -> Clause:
        try:
            return self._by_id[clause_id]
        except KeyError:
            raise KeyError(f"no clause {clause_id!r} in the seeds") from None

    def document(self, doc_id: str) -> Document:
        for doc in self.documents:
            if doc.id == doc_id:
                return doc
        raise KeyError(f"no document {doc_id!r} in the seeds")

    def clauses_of(self, doc_id: str) -> tuple[Clause, ...]:
        return tuple(c for c in self.clauses if c.document == doc_id)

    def granting(self) -> Iterator[Clause]:
        return (c for c in self.clauses if c.grants)


def load_seeds(directory: Path | None = None) -> Seeds:
    """Load every ``*.yaml`` in ``directory`` (default: the package's own seeds) and cross-check them."""
    root = SEEDS_DIR if directory is None else Path(directory)
    files = sorted(root.glob("*.yaml"))
    if not files:
        raise SeedError(str(root), None, None, "no seed files (*.yaml) found")
    documents: list[Document] = []
    clauses: list[Clause] = []
    purposes: dict[str, Purpose] = {}
    clause_files: dict[str, str] = {}
    doc_files: dict[str, str] = {}
    for path in files:
        doc, doc_purposes, doc_clauses = _load_file(path)
        if doc.id in doc_files:
            raise SeedError(path.name, None, "document.id", f"{doc.id!r} also used by {doc_files[doc.id]}")
        doc_files[doc.id] = path.name
        documents.append(doc)
        for purpose in doc_purposes:
            if purpose.id in purposes:
                raise SeedError(path.name, None, "purposes.id", f"duplicate purpose {purpose.id!r}")
            purposes[purpose.id] = purpose
        for clause in doc_clauses:
            if clause.id in clause_files:
                raise SeedError(
                    path.name, clause.id, "id", f"duplicate clause id (also in {clause_files[clause.id]})"
                )
            clause_files[clause.id] = path.name
            clauses.append(clause)
    for clause in clauses:
        _check_purpose_references(clause, purposes, clause_files[clause.id])
    return Seeds(
        documents=tuple(documents),
        clauses=tuple(clauses),
        purposes=purposes,
        _by_id={c.id: c for c in clauses},
    )


def _load_file(path: Path) -> tuple[Document, list[Purpose], list[Clause]]:
    name = path.name
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)  # a safe loader either way
    except yaml.YAMLError as exc:
        raise SeedError(name, None, None, f"not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise SeedError(name, None, None, f"not UTF-8: {exc}") from exc
    if not isinstance(raw, dict):
        raise SeedError(name, None, None, "top level must be a mapping with document, purposes, clauses")
    _no_unknown_keys(raw, _TOP_KEYS, name, None, "")
    for key in sorted(_TOP_KEYS):
        if key not in raw:
            raise SeedError(name, None, key, "missing")
    doc = _document(raw["document"], path)
    if path.stem != doc.id:
        raise SeedError(name, None, "document.id", f"{doc.id!r} must match the file name {path.stem!r}")
    purposes = _purposes(raw["purposes"], doc.id, name)
    if not isinstance(raw["clauses"], list) or not raw["clauses"]:
        raise SeedError(name, None, "clauses", "must be a non-empty list")
    clauses = [_clause(item, doc.id, name, index) for index, item in enumerate(raw["clauses"])]
    return doc, purposes, clauses


def _document(raw: object, path: Path) -> Document:
    name = path.name
    if not isinstance(raw, dict):
        raise SeedError(name, None, "document", "must be a mapping")
    _no_unknown_keys(raw, _DOC_KEYS, name, None, "document.")
    doc_id = _text(raw, "id", name, None, "document.")
    if not _DOC_ID.match(doc_id):
        raise SeedError(name, None, "document.id", f"{doc_id!r} is not a lower-case identifier")
    source = _text(raw, "source_file", name, None, "document.")
    if not _SOURCE_FILE.match(source):
        raise SeedError(name, None, "document.source_file", f"{source!r} is not a source file name")
    return Document(
        id=doc_id,
        company=_english(raw, "company", name, None, "document."),
        source_file=source,
        title=_english(raw, "title", name, None, "document."),
        path=path,
    )


def _purposes(raw: object, doc_id: str, name: str) -> list[Purpose]:
    if not isinstance(raw, list):
        raise SeedError(name, None, "purposes", "must be a list (may be empty)")
    out: list[Purpose] = []
    for item in raw:
        if not isinstance(item, dict):
            raise SeedError(name, None, "purposes", f"entry {item!r} must be a mapping")
        _no_unknown_keys(item, _PURPOSE_KEYS, name, None, "purposes.")
        pid = _text(item, "id", name, None, "purposes.")
        prefix, _, rest = pid.partition(".")
        if prefix != doc_id or not _WORD_ID.match(rest):
            raise SeedError(name, None, "purposes.id", f"{pid!r} must be '{doc_id}.<lower_case_words>'")
        out.append(
            Purpose(
                id=pid,
                summary=_english(item, "summary", name, pid, "purposes."),
                statistics_only=_flag(item, "statistics_only", name, pid, "purposes.", required=True),
                document=doc_id,
            )
        )
    return out


def _clause(raw: object, doc_id: str, name: str, index: int) -> Clause:
    if not isinstance(raw, dict):
        raise SeedError(name, f"#{index}", None, "clause must be a mapping")
    label = str(raw.get("id", f"#{index}"))
    _no_unknown_keys(raw, _CLAUSE_KEYS, name, label, "")
    cid = _text(raw, "id", name, label, "")
    if not re.match(rf"^{re.escape(doc_id)}-\d+(\.\d+)*(\.[a-z][a-z0-9_]*)?$", cid):
        raise SeedError(name, cid, "id", f"must look like '{doc_id}-2.2.4' (optionally '.word')")
    section = _text(raw, "section", name, cid, "")
    if not _SECTION.match(section):
        raise SeedError(name, cid, "section", f"{section!r}: use ASCII section numbering such as 2(2)[4]")
    kind = _text(raw, "kind", name, cid, "")
    if kind not in CLAUSE_KINDS:
        raise SeedError(name, cid, "kind", f"unknown kind {kind!r} (one of {', '.join(CLAUSE_KINDS)})")
    categories = _words(raw, "data_categories", name, cid, CATEGORIES)
    items = _items(raw.get("data_items"), categories, name, cid)
    recipients = _words(raw, "recipients", name, cid, PRINCIPAL_KINDS)
    actions = _words(raw, "actions", name, cid, ACTIONS)
    purposes = _words(raw, "purposes", name, cid, None)
    limits = _words(raw, "limits", name, cid, None)
    grants = _flag(raw, "grants", name, cid, "", required=True)
    conditions = _conditions(raw.get("conditions"), name, cid)
    requirement = raw.get("requirement")
    if requirement is not None and (not isinstance(requirement, str) or not _WORD_ID.match(requirement)):
        raise SeedError(name, cid, "requirement", f"{requirement!r} must be null or a lower_case id")
    if grants:
        for fname, value in (
            ("recipients", recipients),
            ("actions", actions),
            ("purposes", purposes),
            ("data_categories", categories),
        ):
            if not value:
                raise SeedError(name, cid, fname, "a granting clause must name at least one")
    elif actions:
        raise SeedError(name, cid, "actions", "a non-granting clause must have actions: []")
    if conditions.statistics_only and set(actions) - {"read_stats"}:
        raise SeedError(name, cid, "actions", "statistics_only clause may only grant read_stats")
    if conditions.min_group_size is not None and "read_stats" not in actions and grants:
        raise SeedError(name, cid, "conditions.min_group_size", "only meaningful with read_stats")
    if "negawatt_items_only" in limits and "electricity" in categories:
        named = items.get("electricity")
        if named is None or set(named) - set(NEGAWATT_ITEMS):
            raise SeedError(
                name,
                cid,
                "data_items",
                "negawatt_items_only: electricity is granted as negawatt items only "
                f"({', '.join(NEGAWATT_ITEMS)})",
            )
    return Clause(
        id=cid,
        section=section,
        kind=kind,
        summary=_english(raw, "summary", name, cid, ""),
        data_categories=categories,
        recipients=recipients,
        purposes=purposes,
        actions=actions,
        grants=grants,
        conditions=conditions,
        limits=limits,
        requirement=requirement,
        document=doc_id,
        data_items=tuple(items.items()),
    )


def _items(raw: object, categories: tuple[str, ...], name: str, cid: str) -> dict[str, tuple[str, ...]]:
    """``data_items``: category -> the items of the field table the clause names (a grant below the
    category).  Each category must be one of the clause's, and one that has items."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SeedError(name, cid, "data_items", "must be a mapping of category to a list of items")
    out: dict[str, tuple[str, ...]] = {}
    for category, items in raw.items():
        where = f"data_items.{category}"
        if category not in categories:
            raise SeedError(name, cid, where, f"{category!r} is not among the clause's data_categories")
        if not has_items(category):
            raise SeedError(name, cid, where, f"{category!r} is a record category: it is granted whole")
        if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
            raise SeedError(name, cid, where, "must be a non-empty list of items")
        known = category_items(category)
        for item in items:
            if item not in known:
                raise SeedError(
                    name, cid, where, f"{item!r} is not an item of {category} (one of {', '.join(known)})"
                )
        if len(set(items)) != len(items):
            raise SeedError(name, cid, where, "repeats an item")
        out[category] = tuple(items)
    return out


def _conditions(raw: object, name: str, cid: str) -> Conditions:
    if raw is None:
        return Conditions()
    if not isinstance(raw, dict):
        raise SeedError(name, cid, "conditions", "must be a mapping")
    _no_unknown_keys(raw, _CONDITION_KEYS, name, cid, "conditions.")
    relationship = raw.get("relationship", "any")
    if relationship not in RELATIONSHIPS:
        raise SeedError(
            name, cid, "conditions.relationship", f"{relationship!r} is not one of {', '.join(RELATIONSHIPS)}"
        )
    size = raw.get("min_group_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 2):
        raise SeedError(name, cid, "conditions.min_group_size", f"{size!r} must be null or an integer >= 2")
    return Conditions(
        relationship=relationship,
        statistics_only=_flag(raw, "statistics_only", name, cid, "conditions."),
        min_group_size=size,
        identity_check=_flag(raw, "identity_check", name, cid, "conditions."),
        after_contract_end=_flag(raw, "after_contract_end", name, cid, "conditions."),
        legal_hold=_flag(raw, "legal_hold", name, cid, "conditions."),
        named_recipients=_flag(raw, "named_recipients", name, cid, "conditions."),
    )


def _check_purpose_references(clause: Clause, purposes: Mapping[str, Purpose], name: str) -> None:
    for pid in clause.purposes:
        purpose = purposes.get(pid)
        if purpose is None:
            raise SeedError(name, clause.id, "purposes", f"purpose {pid!r} is not declared by any document")
        if clause.grants and purpose.statistics_only and set(clause.actions) - {"read_stats"}:
            raise SeedError(
                name,
                clause.id,
                "actions",
                f"purpose {pid!r} is statistics-only, so the clause may only grant read_stats",
            )


def _no_unknown_keys(
    raw: Mapping[Any, Any], allowed: frozenset[str], name: str, cid: str | None, prefix: str
) -> None:
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise SeedError(name, cid, prefix + unknown[0], "unknown field")


def _text(raw: Mapping[str, Any], key: str, name: str, cid: str | None, prefix: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SeedError(name, cid, prefix + key, "missing or empty")
    return value.strip()


def _english(raw: Mapping[str, Any], key: str, name: str, cid: str | None, prefix: str) -> str:
    value = _text(raw, key, name, cid, prefix)
    found = _JAPANESE.search(value)
    if found:
        raise SeedError(name, cid, prefix + key, f"Japanese character {found.group()!r}: write it in English")
    if len(value) > _MAX_SUMMARY:
        raise SeedError(
            name, cid, prefix + key, f"{len(value)} characters: summarise (at most {_MAX_SUMMARY})"
        )
    return " ".join(value.split())


def _flag(
    raw: Mapping[str, Any], key: str, name: str, cid: str | None, prefix: str, *, required: bool = False
) -> bool:
    if key not in raw:
        if required:
            raise SeedError(name, cid, prefix + key, "missing (true or false)")
        return False
    value = raw[key]
    if not isinstance(value, bool):
        raise SeedError(name, cid, prefix + key, f"{value!r} must be true or false")
    return value


def _words(
    raw: Mapping[str, Any], key: str, name: str, cid: str, vocabulary: tuple[str, ...] | None
) -> tuple[str, ...]:
    value = raw.get(key, [])
    if value is None:
        value = []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SeedError(name, cid, key, "must be a list of words")
    for word in value:
        if vocabulary is not None and word not in vocabulary:
            raise SeedError(name, cid, key, f"unknown word {word!r} (not in seeds.vocabulary)")
        if vocabulary is None and not re.match(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$", word):
            raise SeedError(name, cid, key, f"{word!r} is not a lower_case id")
    if len(set(value)) != len(value):
        raise SeedError(name, cid, key, "repeats a word")
    return tuple(value)
