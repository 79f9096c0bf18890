"""Words of the web views in Japanese and English, and dates that cannot be misread.

The language is the ``lang`` query parameter when given, else the browser's ``Accept-Language`` (its
first Japanese or English entry), else English.  Dates are written year-month-day with the weekday and
``JST`` (Asia/Tokyo) in both languages, so no reader has to guess between 06/01 and 01/06.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from aiohttp import web

TOKYO: Final = ZoneInfo("Asia/Tokyo")
LANGS: Final = ("ja", "en")
_WEEKDAYS: Final = {
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    "ja": ("月", "火", "水", "木", "金", "土", "日"),
}

MESSAGES: Final[dict[str, dict[str, str]]] = {
    "en": {
        "maintenance": "Maintenance",
        "my_home": "My home",
        "sign_out": "Sign out",
        "sign_in": "Sign in",
        "user": "User",
        "password": "Password",
        "homes_attention": "Your installations, most urgent first",
        "homes_note": "Problems are found in each home's readings and in the collector's report on each "
        "device. Viewing this page is recorded in each household's provision ledger.",
        "no_problems": "No problem found",
        "refused": "Not visible now",
        "since": "since",
        "ago": "ago",
        "pv_today": "PV today",
        "of_clear_sky": "of {expected} expected under a clear sky",
        "last_reading": "last reading",
        "details": "Details",
        "back": "Back to the list",
        "not_visible": "Not visible to you: {categories}",
        "kind_health": "{device}: the collector reports {reason}",
        "kind_silent": "{device} ({category}) has sent nothing for {gap}",
        "kind_silent_collector": "The home's collector has stopped reporting",
        "kind_fault": "{device} ({category}) reports a fault{state}",
        "kind_low_yield": "PV yield today {today} against {expected} expected{weather}",
        "kind_battery_idle": "The battery has not charged or discharged (state of charge {soc} %)",
        "kind_counter_stuck": "{device}: counter {counter} is not rising ({missing} of energy not counted)",
        "weather_from_peers": " for today's sky (from your other homes)",
        "weather_unknown": " (weather unknown: a cloudy day reads low)",
        "reason_timeout": "no answer (time-out)",
        "reason_malformed": "malformed replies",
        "reason_unreachable": "not found on the network",
        "reason_pending": "not polled yet",
        "reason_exception": "Modbus exception {code}",
        "severity_3": "urgent",
        "severity_2": "check",
        "severity_1": "note",
        "severity_0": "ok",
        "charts": "Charts",
        "power": "Power (W)",
        "energy_per_day": "Energy per day",
        "loading": "Loading...",
        "webhook": "Alert webhook",
        "webhook_note": "New and cleared problems are sent as a signed JSON POST to this address.",
        "webhook_url": "Address (https://...)",
        "webhook_save": "Save",
        "webhook_remove": "Remove",
        "webhook_secret": "Signing secret (shown once, keep it): {secret}",
        "webhook_none": "No webhook set.",
        "webhook_set": "Sending to {url}.",
        "error": "Error",
        "error_back": "Back to the start page",
    },
    "ja": {
        "maintenance": "保守",
        "my_home": "わが家",
        "sign_out": "ログアウト",
        "sign_in": "ログイン",
        "user": "ユーザー",
        "password": "パスワード",
        "homes_attention": "担当の住宅（対応が急がれる順）",
        "homes_note": "各住宅の計測値と、コレクタによる機器ごとの状態報告から問題を検出します。"
        "このページの表示は各世帯の提供記録に記録されます。",
        "no_problems": "問題なし",
        "refused": "現在は表示できません",
        "since": "発生",
        "ago": "前",
        "pv_today": "本日の発電量",
        "of_clear_sky": "（晴天時の見込み {expected}）",
        "last_reading": "最終受信",
        "details": "詳細",
        "back": "一覧に戻る",
        "not_visible": "表示できない項目: {categories}",
        "kind_health": "{device}: コレクタの報告は「{reason}」",
        "kind_silent": "{device}（{category}）から {gap} 受信がありません",
        "kind_silent_collector": "この住宅のコレクタからの報告が止まっています",
        "kind_fault": "{device}（{category}）が異常を通知しています{state}",
        "kind_low_yield": "本日の発電量 {today}（見込み {expected}{weather}）",
        "kind_battery_idle": "蓄電池が充放電していません（残量 {soc} %）",
        "kind_counter_stuck": "{device}: 積算値 {counter} が増えていません（未計上 {missing}）",
        "weather_from_peers": "、他の担当住宅から推定した本日の天候による",
        "weather_unknown": "、天候不明のため曇天では低く出ます",
        "reason_timeout": "応答なし（タイムアウト）",
        "reason_malformed": "不正な応答",
        "reason_unreachable": "ネットワーク上に見つかりません",
        "reason_pending": "未取得",
        "reason_exception": "Modbus 例外 {code}",
        "severity_3": "至急",
        "severity_2": "要確認",
        "severity_1": "参考",
        "severity_0": "正常",
        "charts": "グラフ",
        "power": "電力 (W)",
        "energy_per_day": "日別の電力量",
        "loading": "読み込み中...",
        "webhook": "通知用 Webhook",
        "webhook_note": "問題の発生と解消を、署名付き JSON の POST でこのアドレスに送ります。",
        "webhook_url": "送信先 (https://...)",
        "webhook_save": "保存",
        "webhook_remove": "削除",
        "webhook_secret": "署名用シークレット（一度だけ表示します。保管してください）: {secret}",
        "webhook_none": "Webhook は未設定です。",
        "webhook_set": "送信先: {url}",
        "error": "エラー",
        "error_back": "トップページに戻る",
    },
}

CATEGORY_WORDS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "electricity": "grid",
        "pv": "PV",
        "battery": "battery",
        "water": "water",
        "gas": "gas",
        "external_generation": "fuel cell",
        "ev": "EV",
        "equipment": "equipment",
    },
    "ja": {
        "electricity": "系統電力",
        "pv": "太陽光",
        "battery": "蓄電池",
        "water": "水道",
        "gas": "ガス",
        "external_generation": "燃料電池",
        "ev": "電気自動車",
        "equipment": "機器",
    },
}


def language(request: web.Request) -> str:
    """``ja`` or ``en`` for this request (see the module docstring)."""
    asked = request.query.get("lang")
    if asked in LANGS:
        return asked
    header = request.headers.get("Accept-Language", "")
    ranked: list[tuple[float, int, str]] = []
    for i, item in enumerate(header.split(",")[:20]):
        tag, _, rest = item.strip().partition(";")
        q = 1.0
        if rest.strip().startswith("q="):
            try:
                q = float(rest.strip()[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGS and q > 0:
            ranked.append((-q, i, primary))
    return min(ranked)[2] if ranked else "en"


def t(lang: str, key: str, **values: object) -> str:
    text = MESSAGES.get(lang, MESSAGES["en"]).get(key) or MESSAGES["en"][key]
    return text.format(**values) if values else text


def category_word(lang: str, category: str) -> str:
    return CATEGORY_WORDS.get(lang, CATEGORY_WORDS["en"]).get(category, category)


def when(lang: str, ts: datetime | float) -> str:
    """``2026-06-01 (Mon) 14:05 JST``: ISO order, weekday, Tokyo time."""
    dt = datetime.fromtimestamp(ts, UTC) if isinstance(ts, float | int) else ts
    local = dt.astimezone(TOKYO)
    weekday = _WEEKDAYS.get(lang, _WEEKDAYS["en"])[local.weekday()]
    return f"{local:%Y-%m-%d} ({weekday}) {local:%H:%M} JST"


def day(lang: str, ts: datetime) -> str:
    local = ts.astimezone(TOKYO)
    weekday = _WEEKDAYS.get(lang, _WEEKDAYS["en"])[local.weekday()]
    return f"{local:%Y-%m-%d} ({weekday})"


_UNITS: Final = {"en": ("s", "min", "h", "days"), "ja": ("秒", "分", "時間", "日")}


def duration(lang: str, span: timedelta) -> str:
    """A span in the largest unit that keeps it readable (up to 2 of it: 90 s, 45 min, 30 h, 3 days)."""
    s = max(0, int(span.total_seconds()))
    sec, minute, hour, days = _UNITS.get(lang, _UNITS["en"])
    for limit, size, unit in ((120, 1, sec), (7200, 60, minute), (172800, 3600, hour)):
        if s < limit:
            return f"{s // size} {unit}"
    return f"{s // 86400} {days}"


def energy(wh: float) -> str:
    return f"{wh / 1000:.1f} kWh"
