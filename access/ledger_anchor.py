"""What anchors the provision ledger against a rewrite: a keyed chain with signed anchors for the
operator, and a per-household head for the person the records concern.

A plain hash chain only shows that rows were changed by someone who did not recompute the hashes
after them; whoever can write the file can drop its tail and rewrite the head row, or re-chain the
whole file.  So:

* **Keyed chain.** Each row's hash is ``HMAC-SHA256(key, previous hash + canonical row)`` with a key
  from the key file (``access.keys``), which is not in the database.  Without the key no row can be
  recomputed, so any rewrite fails ``hems ledger verify``.
* **Signed anchors.** Two rows of ``provision_ledger_anchor``, each with a MAC over its values: the
  *checkpoint* says where the keyed chain starts (rows up to it were written before ledgers had a
  key and stay plain SHA-256, checked as they were and sealed by the checkpoint's hash), and the
  *head* names the last row, rewritten with every commit.  A dropped tail with a recomputed head, a
  removed checkpoint (to pass the file off as an old unkeyed one) or a re-chained file all fail.
* **The household's head.** The operator's check needs the key, and whoever has it could re-chain
  everything.  The person the records concern can keep their own anchor: their records' head, a
  plain SHA-256 chain over their records only (``household_chain``), shown on their ledger page and
  in the API.  Later listings give each record's running value, so a kept head that no longer
  appears at its place shows that their history was changed, whoever changed it.

What stays out of reach: whoever holds the key *and* an old signed head can roll the file back to
that head unnoticed by ``verify``; the heads people keep (and any head the operator copies elsewhere,
``hems ledger verify`` prints it) are what catch that.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from access.keys import derive

GENESIS = "0" * 64


class ChainKey:
    """The ledger's derived keys: one for row hashes, one for the anchors' MACs."""

    def __init__(self, server_key: bytes) -> None:
        self._rows = hmac.new(derive(server_key, "ledger-chain"), digestmod=hashlib.sha256)
        self._anchors = derive(server_key, "ledger-anchor")

    def row_hash(self, prev_hash: str, canonical: str) -> str:
        h = self._rows.copy()  # the key's pads are hashed once, not per row
        h.update((prev_hash + canonical).encode("utf-8"))
        return h.hexdigest()

    def anchor_mac(self, kind: str, seq: int, row_hash: str) -> str:
        return hmac.new(self._anchors, f"{kind}:{seq}:{row_hash}".encode(), hashlib.sha256).hexdigest()

    def anchor_ok(self, kind: str, seq: int, row_hash: str, mac: str) -> bool:
        return hmac.compare_digest(self.anchor_mac(kind, seq, row_hash), mac)


def plain_hash(prev_hash: str, canonical: str) -> str:
    """Rows written before the checkpoint, and the household chain: SHA-256, no key."""
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def household_chain(canonicals: Iterable[str]) -> list[str]:
    """The running head after each of one household's records (in ledger order): ``h0`` is 64 zeros,
    ``h_i = sha256(h_{i-1} + canonical text of record i)``.  No key, so anyone with the records can
    recompute it."""
    out: list[str] = []
    prev = GENESIS
    for text in canonicals:
        prev = plain_hash(prev, text)
        out.append(prev)
    return out


@dataclass(frozen=True)
class KeptHead:
    """A head a person kept: after ``records`` of their records, the chain value ``hash``."""

    records: int
    hash: str

    @staticmethod
    def parse(text: str) -> KeptHead | None:
        """``"<records>:<64 hex>"`` as the page and the API show it; None for anything else."""
        count, _, digest = text.strip().partition(":")
        digest = digest.lower()
        if not (count.isascii() and count.isdigit() and 0 < len(count) <= 12):
            return None
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            return None
        return KeptHead(int(count), digest)

    def text(self) -> str:
        return f"{self.records}:{self.hash}"

    def matches(self, chain: list[str]) -> bool:
        """Whether the household's current chain still passes through this head.  The head before any
        record (``0:`` and 64 zeros, what a person with no records yet is shown) is where every chain
        starts, so it always stands."""
        if self.records == 0:
            return hmac.compare_digest(self.hash, GENESIS)
        return self.records <= len(chain) and hmac.compare_digest(chain[self.records - 1], self.hash)
