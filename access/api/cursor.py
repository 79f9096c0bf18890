"""Pagination cursors: where the next page of a series starts, signed so that no one can make one up.

A cursor is ``<payload>.<signature>``: the payload is the last (time, device) already sent, the
signature an HMAC over the payload and the query the cursor came from, with a key derived from the
server key (``access.keys``; every worker reads the same file, so any worker accepts any worker's
cursor).  A cursor is checked before anything in it is read, so a forged or edited one is a 400
naming ``cursor`` and a cursor replayed against another query too; what a genuine one holds is
bounded all the same (a time within the years the API serves, a valid device id).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Final

from access.api.problems import ApiProblem, bad_param
from access.keys import derive
from pipeline.query import valid_id

MAX_CURSOR_LEN: Final = 400
PATTERN: Final = r"[A-Za-z0-9_-]{1,300}\.[A-Za-z0-9_-]{22}"  # the OpenAPI document's pattern too
_MIN_US: Final = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
_MAX_US: Final = int(datetime(2201, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
_SIG_BYTES: Final = 16


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _refused() -> ApiProblem:
    return bad_param("cursor", "the cursor is not one this query returned")


class CursorCodec:
    def __init__(self, server_key: bytes) -> None:
        self._key = derive(server_key, "cursor")

    def _signature(self, payload: str, asked: tuple[object, ...]) -> str:
        bound = json.dumps([payload, *(str(p) for p in asked)], separators=(",", ":"))
        return _b64(hmac.new(self._key, bound.encode("utf-8"), hashlib.sha256).digest()[:_SIG_BYTES])

    def encode(self, time_us: int, device: str, asked: tuple[object, ...]) -> str:
        """The cursor of a page whose last row is (``time_us``, ``device``), bound to ``asked``."""
        payload = _b64(json.dumps({"t": time_us, "d": device}, separators=(",", ":")).encode())
        return f"{payload}.{self._signature(payload, asked)}"

    def decode(self, value: str, asked: tuple[object, ...]) -> tuple[int, str]:
        """(time in microseconds, device) from a cursor this server signed for ``asked``; else a 400."""
        if len(value) > MAX_CURSOR_LEN or not value.isascii():
            raise _refused()
        payload, _, signature = value.partition(".")
        if not hmac.compare_digest(self._signature(payload, asked), signature):
            raise _refused()
        try:
            raw = json.loads(_unb64(payload))
            t, d = raw["t"], raw["d"]
        except (ValueError, binascii.Error, KeyError, TypeError):
            raise _refused() from None
        if type(t) is not int or not _MIN_US <= t < _MAX_US or not isinstance(d, str) or not valid_id(d):
            raise _refused()
        return t, d
