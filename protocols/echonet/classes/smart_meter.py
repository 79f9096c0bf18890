"""Low-voltage smart electric energy meter, class 0x0288 (the household's grid connection).

Energy registers count in steps of coefficient (0xD3) x unit (0xE1) and roll over at 10**digits (0xD7)
counts; 0xEA/0xEB hold the register at the latest :00/:30 of the meter's own (local) clock.
"""

from protocols.echonet.codecs import (
    METER_UNIT_KWH,
    Code,
    FixedTimeEnergy,
    MeterEnergy,
    Raw,
    Signed,
    Unsigned,
)
from protocols.echonet.entry import CLASSES, EchonetClass, Prop

SMART_METER = CLASSES.register(
    EchonetClass(
        0x0288,
        "low-voltage smart electric energy meter",
        device="smart_meter",
        category="electricity",
        props=(
            # + import from the grid, - export
            Prop(
                0xE7,
                "instantaneous power",
                Signed(4, -2_147_483_647, 2_147_483_645),
                "power_w",
                "W",
                poll="fast",
            ),
            Prop(0xD3, "coefficient", Unsigned(4, 999_999), param="coefficient", poll="slow", optional=True),
            Prop(0xD7, "effective digits", Code(1, 8), param="digits", poll="slow"),
            Prop(0xE1, "energy unit", Code(codes=METER_UNIT_KWH), param="unit", poll="slow"),
            Prop(0xE0, "cumulative energy, normal", MeterEnergy(), "import_wh_total", "Wh", poll="slow"),
            Prop(
                0xE3,
                "cumulative energy, reverse",
                MeterEnergy(),
                "export_wh_total",
                "Wh",
                poll="slow",
                optional=True,
            ),
            Prop(
                0xEA,
                "fixed-time cumulative, normal",
                FixedTimeEnergy(),
                "import_wh_total",
                "Wh",
                poll="slow",
                optional=True,
            ),
            Prop(
                0xEB,
                "fixed-time cumulative, reverse",
                FixedTimeEnergy(),
                "export_wh_total",
                "Wh",
                poll="slow",
                optional=True,
            ),
            Prop(0xE5, "day for history 1", Code(0, 99), settable=True, default=b"\x00"),
            # the day asked in 0xE5 (uint16), then the register at each of its 48 half hours (uint32
            # counts as 0xE0; 0xFFFFFFFE where the meter recorded nothing)
            Prop(0xE2, "history of cumulative energy 1, normal", Raw(2 + 48 * 4)),
            # R and T line currents of a single-phase three-wire service, int16 each in 0.1 A
            Prop(0xE8, "instantaneous currents", Raw(4)),
        ),
    )
)
