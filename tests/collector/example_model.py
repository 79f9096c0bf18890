"""A SunSpec model the project does not ship, written the way README's "Add a SunSpec model" says: one
module with its entry.  The test registers it inside ``MODELS.temporarily``; a real model registers
itself with ``MODELS.register(...)`` and one import line in ``protocols/sunspec/models/__init__.py``.

A vendor model (SunSpec leaves ids 64000-65535 to vendors) of a wallbox: charging power and the energy
it has put into and taken from the car.  Its points carry fields the household already has (``ev``),
so the emulator serves it and the collector reads it with no code of their own.
"""

from protocols.sunspec.points import Emit, build_model, row

WALLBOX_MODEL_ID = 64201

WALLBOX = build_model(
    WALLBOX_MODEL_ID,
    "vendor_wallbox",
    8,
    [
        row("W", "int16", "W_SF", "W"),
        row("W_SF", "sunssf"),
        row("WhCha", "acc32", "Wh_SF", "Wh"),
        row("WhDisCha", "acc32", "Wh_SF", "Wh"),
        row("Wh_SF", "sunssf"),
        row("Pad", "pad"),
    ],
    category="ev",
    emits=(
        Emit("power_w", "W", "W", signed=True),
        Emit("charge_wh_total", "WhCha", "Wh", counter=True),
        Emit("discharge_wh_total", "WhDisCha", "Wh", counter=True),
    ),
    scale_factors={"W_SF": 0, "Wh_SF": 0},
)
