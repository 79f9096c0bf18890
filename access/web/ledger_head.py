"""The homeowner's ledger head on their ledger page: the value to keep, and a check of a value kept
before.

The head is the household's own chain over its provision records (``access.ledger_anchor``).  A
person who notes it down today can later paste it in here: if the records up to it were changed or
removed, however carefully the file was rewritten, the value no longer appears at its place.
"""

from __future__ import annotations

import html

from access.ledger import HouseholdHead
from access.ledger_anchor import KeptHead
from access.web.i18n import t


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def ledger_head_section(
    household: str, ledger: HouseholdHead, kept_text: str | None, lang: str = "en", action: str = "/ledger"
) -> str:
    head = ledger.head
    out = (
        f'<div class="ledger-head"><h3>{_e(t(lang, "head_title"))}</h3>'
        f'<p class="muted small">{_e(t(lang, "head_note"))}</p>'
        f'<p><code id="ledger-head" class="hash">{_e(head.text())}</code></p>'
        f'<form method="get" action="{_e(action)}" class="kept-head row">'
        f'<input type="hidden" name="household" value="{_e(household)}">'
        f'<input type="hidden" name="lang" value="{_e(lang)}">'
        f'<label>{_e(t(lang, "head_kept"))} <input name="kept" value="{_e(kept_text or "")}" '
        'placeholder="records:hash" size="40"></label>'
        f'<button type="submit">{_e(t(lang, "head_check"))}</button></form>'
    )
    if kept_text:
        kept = KeptHead.parse(kept_text)
        if kept is None:
            verdict = f'<p class="error" role="alert">{_e(t(lang, "head_not_a_head"))}</p>'
        elif ledger.verdict(kept) == "intact":
            verdict = (
                f'<p class="ok" id="kept-verdict">{_e(t(lang, "head_intact", records=kept.records))}</p>'
            )
        else:
            verdict = f'<p class="error" role="alert" id="kept-verdict">{_e(t(lang, "head_changed"))}</p>'
        out += verdict
    return out + "</div>"
