"""Logging settings for third-party libraries, set in one place for every process that uses them."""

from __future__ import annotations

import logging


def quiet_pymodbus() -> None:
    """pymodbus logs every timeout, refused connection and undecodable frame itself, at WARNING or ERROR
    and sometimes with a traceback: 10 MB for 110,000 fuzzed frames.  Our code reports each of those once
    in its own terms (the collector's health table; the emulator answers with an exception code or drops
    the frame as a real device would), so the library's lines are noise; only its CRITICAL ones pass."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
