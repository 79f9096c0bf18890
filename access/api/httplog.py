"""aiohttp's log of requests that were not HTTP at all, made one line each.

A request line or header over aiohttp's limits, a header without a colon, a bad Content-Length, a body
that is not in the Content-Encoding it claims:
aiohttp answers 400 before any handler (or our middleware) runs, and logs the parser's exception at
ERROR with its traceback (logger ``aiohttp.server``).  Those are the client's mistakes, and anyone can
send them by the thousand: a traceback each would bury the log and look like a server fault.  The
filter turns such records into one INFO line naming the address and the kind of mistake; errors of
the server itself keep their traceback.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

SERVER_LOGGER = "aiohttp.server"


class ClientErrorsInOneLine(logging.Filter):
    """For ``aiohttp.server``: a record whose exception is the client's malformed HTTP, without it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RequestPayloadError):
            # A body that broke while read (not the Content-Encoding it claims): the app answered 400,
            # then aiohttp meets the same error again draining the rest and calls it "Unhandled".
            record.msg, record.args = "unreadable request body refused (%s)", (type(exc).__name__,)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        elif isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 400) < 500:
            address = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            # The exception's class only: its message quotes the offending bytes, which may hold a
            # credential from a header.
            record.msg = "malformed HTTP request from %s refused with %s (%s)"
            record.args = (address, exc.code or 400, type(exc).__name__)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_client_errors() -> None:
    """Install the filter once per process (every app factory calls this)."""
    logger = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(f, ClientErrorsInOneLine) for f in logger.filters):
        logger.addFilter(ClientErrorsInOneLine())
