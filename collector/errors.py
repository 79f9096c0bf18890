"""Why a poll failed, as a small closed set of reasons the health view and the backoff share.

Each protocol client turns its own failure modes into one of these, so the scheduler never needs to
know whether a timeout came from a UDP datagram that never arrived or a Modbus TCP read.
"""

from __future__ import annotations

from config import ConfigError as ConfigError  # the one configuration error type, shared by every package


class CollectorError(Exception):
    """Base of every error the collector raises on purpose (a configuration error is the shared
    ``ConfigError``: the file is one, so is its error type)."""


class PollError(CollectorError):
    """A device read failed; ``reason`` is the health reason (``timeout``, ``exception:2``, ...)."""

    reason: str = "error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class DeviceTimeout(PollError):
    reason = "timeout"


class DeviceUnreachable(PollError):
    reason = "unreachable"


class MalformedReply(PollError):
    reason = "malformed"


class DeviceException(PollError):
    """The device answered with a protocol-level refusal (a Modbus exception code)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, f"exception:{code}")
        self.code = code
