"""The server's secret key: one random key file in the data directory, from which each use derives
its own key (cursor signatures, the ledger's keyed chain, the sign-in log's name hashes).

It is a file, not a row of the access database, so the one thing the ledger's keyed chain guards
against (someone who can write the database file rewriting its history) is not also handed the key
by a copy or a backup of that file.  Keep the key out of database backups, or at least apart from
them.  ``HEMS_KEY_FILE`` puts it elsewhere (a secrets mount, say).  Every ``hems serve`` worker and
every ``hems`` command reads the same file, so they agree on signatures without talking.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from access.db import AccessDb, is_url

KEY_ENV = "HEMS_KEY_FILE"
_KEY_BYTES = 32


class KeyFileError(ValueError):
    """The key file is missing where it must exist, or unreadable."""


KEY_NAME = "hems.key"


def key_file_for(where: AccessDb, data: str | os.PathLike[str] | None = None) -> Path:
    """Where the key of the access database ``where`` lives: ``$HEMS_KEY_FILE``, else ``hems.key`` in
    the same directory (the data directory); for a PostgreSQL database, in the data directory
    (``data``, else the default one: ``access.location``)."""
    override = os.environ.get(KEY_ENV)
    if override:
        return Path(override)
    if is_url(where):
        from access.location import data_dir

        return data_dir(data) / KEY_NAME
    return Path(where).parent / KEY_NAME


def _read(path: Path) -> bytes | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyFileError(f"{path} is not a key file (64 hex digits)") from None
    if len(key) != _KEY_BYTES:
        raise KeyFileError(f"{path} is not a key file (64 hex digits)")
    return key


def load_key(path: Path, *, create: bool = True) -> bytes:
    """The key in ``path``; made (mode 0600) when missing and ``create``, else :class:`KeyFileError`.

    Creation writes a temporary file and hard-links it into place, which fails if another process
    got there first: then that process's key is read, so workers starting together share one key."""
    for _ in range(50):
        key = _read(path)
        if key is not None:
            return key
        if not create:
            raise KeyFileError(f"the key file {path} is missing")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(_KEY_BYTES).hex().encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        time.sleep(0.001)
    raise KeyFileError(f"could not read or create the key file {path}")


def derive(key: bytes, label: str) -> bytes:
    """A key for one use, so a signature made for one thing never verifies as another."""
    return hmac.new(key, b"hems:" + label.encode("ascii"), hashlib.sha256).digest()
