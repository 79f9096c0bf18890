"""What pysunspec2 (a third-party SunSpec client, synchronous: run it in a thread) reads from a device:
model id -> point name -> its computed value (scale factor applied)."""

from __future__ import annotations

from typing import Any

from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP


def pysunspec2_scan(port: int, unit: int, host: str = "127.0.0.1") -> dict[int, dict[str, Any]]:
    dev = SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr=host, ipport=port, timeout=2)
    try:
        dev.scan()
        return {
            mid: {name: pt.cvalue for name, pt in dev.models[mid][0].points.items()}
            for mid in dev.models
            if isinstance(mid, int)
        }
    finally:
        dev.close()
