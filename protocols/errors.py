"""The root of every error the protocol codecs raise.

``ProtocolError`` is a ``ValueError``: each one says a value or a byte string does not fit the protocol
(a malformed frame, a register value out of its type's range, an entry the registry refuses).
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """Base of the codecs' and registries' errors."""


class RegistryError(ProtocolError):
    """An entry that cannot be registered (its key is taken) or a key that is not registered."""
