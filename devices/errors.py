"""The root of every error the emulator raises on purpose.

``except DeviceError`` catches bad simulation input, a fleet that cannot start, an unknown household or
device id and a fault request that cannot be applied; each keeps the built-in base it had before
(``ValueError``, ``KeyError``, ``RuntimeError``), so existing handlers still catch them.
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base of the emulator's own errors."""


class DeviceSettingsError(DeviceError, ValueError):
    """Settings of an emulated device that it cannot have (unknown name, value out of its range)."""
