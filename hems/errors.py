"""The root of the errors the ``hems`` commands raise on purpose, and the roots they report.

``hems.cli`` turns any of ``KNOWN_ERRORS`` into one line on stderr and exit status 2: a wrong
setting, a store this release must not write to or a spool already in use is something to fix, and
a traceback would only bury the sentence that says what.  Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from collector.errors import CollectorError
from config import ConfigError
from devices.errors import DeviceError
from pipeline.errors import PipelineError
from protocols.errors import ProtocolError


class HemsError(Exception):
    """Base of every error a ``hems`` command raises on purpose."""


class UsageError(HemsError, ValueError):
    """Options that cannot work together (the message names them)."""


KNOWN_ERRORS: tuple[type[Exception], ...] = (
    HemsError,
    ConfigError,
    PipelineError,
    CollectorError,
    DeviceError,
    ProtocolError,
)
