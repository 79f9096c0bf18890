"""The terms' purposes, clause kinds and principal kinds in words a homeowner reads, in both languages.

English comes from the seeds' own summaries (``seeds/*.yaml``, written in our words); Japanese is a
short label of our own per purpose, never the terms' sentences.  A purpose added to the seeds without
a Japanese label fails ``tests/access/test_home_pages.py``, so the ledger never shows a bare id.
"""

from __future__ import annotations

import re
from typing import Final

from seeds.loader import Clause, Seeds

_SECTION_REF: Final = re.compile(r"\s*\((?:[^()]|\([^()]*\))*\d(?:[^()]|\([^()]*\))*\)$")
PURPOSES_JA: Final[dict[str, str]] = {
    "enex.supply_contract": "電力供給契約の締結と履行",
    "enex.supply_notices": "供給に関する連絡",
    "enex.billing": "料金の請求と収納",
    "enex.supply_balancing": "需要と供給のバランスの維持",
    "enex.retailer_switch": "小売事業者の切り替え手続き",
    "enex.enquiries": "問い合わせへの対応",
    "enex.marketing": "販売の企画（統計のみ）",
    "enex.hems_data_service": "HEMS データを使うサービス",
    "enex.other_business_info": "電気以外の商品・サービスのご案内",
    "enex.management_analysis": "経営の分析（統計のみ）",
    "enex.service_development": "サービス・機器の研究開発",
    "enex.ancillary": "付随する業務",
    "enex.wheeling_contract": "託送契約の手続き",
    "enex.switching_cancellation": "切り替え時の旧契約の解約連絡",
    "enex.supply_point_check": "供給地点の確認",
    "enex.grid_operations": "送配電事業者による検針・保守",
    "enex.disclosure_to_person": "ご本人への開示",
    "kaluza.app_service": "充電アプリのサービス提供",
    "kaluza.customer_support": "アプリのサポート",
    "kaluza.usage_analysis": "機能の使われ方の分析",
    "kaluza.product_development": "製品・アプリの開発",
    "kaluza.security": "セキュリティと認証",
    "kaluza.legal_obligation": "法的義務の履行",
    "kaluza.disclosure_to_person": "ご本人への開示",
    "sobu_gas.energy_supply": "エネルギーの供給",
    "sobu_gas.supply_works": "供給設備の工事",
    "sobu_gas.safety": "設備・機器の保安",
    "sobu_gas.alarms_and_shutoff": "警報・遠隔遮断のサービス",
    "sobu_gas.appliance_business": "機器の販売・修理・点検",
    "sobu_gas.promotion_research": "ご案内・調査・研究開発",
    "sobu_gas.incidental": "付随する業務",
    "sobu_gas.appliance_safety": "ガス機器の安全と品質の向上",
    "sobu_gas.wheeling_contract": "託送契約の手続き",
    "sobu_gas.switching_cancellation": "切り替え時の旧契約の解約連絡",
    "sobu_gas.supply_point_check": "供給地点の確認",
    "sobu_gas.grid_operations": "導管事業者による検針・保守",
    "sobu_gas.negawatt": "ネガワット取引",
    "sobu_gas.disclosure_to_person": "ご本人への開示",
    "sps.service_provision": "サービスの提供と保守",
    "sps.service_improvement": "サービスの改善と新しいサービスの企画",
    "sps.customer_support": "サポートセンターでの対応",
    "sps.surveys": "アンケートなどの調査",
    "sps.pv_after_maintenance": "太陽光発電設備のアフターメンテナンス",
    "sps.disclosure_to_person": "ご本人への開示",
    "xoom.customer_service": "お客さま対応と契約の管理",
    "xoom.product_improvement": "商品の改善とご案内",
    "xoom.regulatory_statistics": "監督官庁に出す統計",
    "xoom.wheeling_contract": "託送契約の手続き",
    "xoom.switching_cancellation": "切り替え時の旧契約の解約連絡",
    "xoom.supply_point_check": "供給地点の確認",
    "xoom.grid_operations": "送配電事業者による検針・保守",
    "xoom.negawatt": "ネガワット取引",
    "xoom.procurement": "委託先による調達業務",
    "xoom.subsidy_eligibility": "給付金の対象の確認",
    "xoom.debt_collection": "未収金の回収",
    "xoom.disclosure_to_person": "ご本人への開示",
}

CLAUSE_KINDS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "purpose_of_use": "purpose of use",
        "joint_use": "joint use",
        "right_of_person": "the person's rights",
        "safeguard": "safeguards",
        "provision_to_third_parties": "provision to third parties",
        "statistics": "statistics",
        "entrustment": "entrustment",
        "definition": "definition",
        "retention": "retention",
    },
    "ja": {
        "purpose_of_use": "利用目的",
        "joint_use": "共同利用",
        "right_of_person": "ご本人の権利",
        "safeguard": "安全管理",
        "provision_to_third_parties": "第三者提供",
        "statistics": "統計",
        "entrustment": "委託",
        "definition": "定義",
        "retention": "保存",
    },
}

KINDS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "homeowner": "resident",
        "sales_company": "sales company",
        "installer": "installer",
        "wholesaler": "wholesaler",
        "approved_company": "company approved by your sales company",
        "designated_body": "designated body",
        "operator": "service operator",
        "analyst": "analyst",
        "retailer": "electricity retailer",
        "grid_operator": "grid operator",
        "dr_aggregator": "demand-response company",
    },
    "ja": {
        "homeowner": "居住者",
        "sales_company": "販売会社",
        "installer": "施工・保守会社",
        "wholesaler": "卸売会社",
        "approved_company": "販売会社が承認した会社",
        "designated_body": "指定された機関",
        "operator": "サービス運営会社",
        "analyst": "分析担当",
        "retailer": "小売電気事業者",
        "grid_operator": "送配電事業者",
        "dr_aggregator": "デマンドレスポンス事業者",
    },
}


def purpose_words(seeds: Seeds, lang: str, purpose: str) -> str:
    """A short name of the purpose: the Japanese label, or the seeds' summary up to its first pause."""
    if lang == "ja" and purpose in PURPOSES_JA:
        return PURPOSES_JA[purpose]
    p = seeds.purposes.get(purpose)
    if p is None:
        return purpose
    head = re.split(r": |; |\. ", p.summary, maxsplit=1)[0].strip().rstrip(".,")
    head = _SECTION_REF.sub("", head)  # "(2(1))", "(5 joint use (1), purpose (3))": cited apart
    return head or p.summary


def clause_citation(seeds: Seeds, clause_id: str) -> str:
    """``Smart Power System 2(2)[4]``: the company whose terms they are, and the section."""
    clause = _clause(seeds, clause_id)
    if clause is None:
        return clause_id
    company = next((d.company for d in seeds.documents if d.id == clause.document), clause.document)
    return f"{company} {clause.section}"


def clause_kind(seeds: Seeds, lang: str, clause_id: str) -> str:
    clause = _clause(seeds, clause_id)
    words = CLAUSE_KINDS.get(lang, CLAUSE_KINDS["en"])
    return "" if clause is None else words.get(clause.kind, clause.kind.replace("_", " "))


def clause_summary(seeds: Seeds, clause_id: str) -> str:
    clause = _clause(seeds, clause_id)
    return "" if clause is None else clause.summary


def kind_words(lang: str, kind: str) -> str:
    return KINDS.get(lang, KINDS["en"]).get(kind, kind.replace("_", " "))


def _clause(seeds: Seeds, clause_id: str) -> Clause | None:
    return next((c for c in seeds.clauses if c.id == clause_id), None)
