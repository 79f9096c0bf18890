"""SunSpec Modbus devices: our own model tables (``models``) and the per-home emulator (``server``)."""
