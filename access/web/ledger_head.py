"""The homeowner's ledger head on their page: the value to keep, and a check of a value kept before.

The head is the household's own chain over its provision records (``access.ledger_anchor``).  A
person who notes it down today can later paste it in here: if the records up to it were changed or
removed, however carefully the file was rewritten, the value no longer appears at its place.
"""

from __future__ import annotations

import html

from access.ledger import HouseholdHead
from access.ledger_anchor import KeptHead


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def ledger_head_section(household: str, ledger: HouseholdHead, kept_text: str | None) -> str:
    head = ledger.head
    out = (
        '<div class="ledger-head"><h3>Ledger head</h3>'
        "<p>Keep this value somewhere of your own. If a later visit finds it no longer at its place, "
        "your records were changed after you kept it.</p>"
        f'<p><code id="ledger-head">{_e(head.text())}</code></p>'
        f'<form method="get" action="/" class="kept-head"><input type="hidden" name="household" '
        f'value="{_e(household)}"><label>A head you kept <input name="kept" '
        f'value="{_e(kept_text or "")}" placeholder="records:hash" size="40"></label>'
        '<button type="submit">Check</button></form>'
    )
    if kept_text:
        kept = KeptHead.parse(kept_text)
        if kept is None:
            verdict = '<p class="error" role="alert">That is not a ledger head (records:hash).</p>'
        elif ledger.verdict(kept) == "intact":
            verdict = (
                f'<p class="ok" id="kept-verdict">Intact: your first {kept.records} records are as '
                "they were when you kept this head.</p>"
            )
        else:
            verdict = (
                '<p class="error" role="alert" id="kept-verdict">Changed: your records up to that head '
                "are not what they were when you kept it. Ask the operator why.</p>"
            )
        out += verdict
    return out + "</div>"
