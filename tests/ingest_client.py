"""Uploading one batch to an ingest replica as a gateway would (gzip'd line protocol, the batch id),
for tests that check what the endpoint answers rather than what a gateway does with it."""

from __future__ import annotations

import gzip
import hashlib
import json
import urllib.error
import urllib.request
from typing import Any


def post_batch(base_url: str, credential: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """(status, decoded answer); a refusal must come as problem+json."""
    request = urllib.request.Request(
        base_url + "/api/v1/ingest",
        data=gzip.compress(body),
        method="POST",
        headers={
            "Authorization": f"Bearer {credential}",
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Encoding": "gzip",
            "Idempotency-Key": hashlib.sha256(body).hexdigest(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Type"].startswith("application/problem+json")
        return e.code, json.load(e)
