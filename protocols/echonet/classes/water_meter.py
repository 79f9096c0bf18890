"""Water flow meter, class 0x0281: cumulative flow (0xE0) in 10**-unit m3 (unit 0xE1, 0..6)."""

from protocols.echonet.codecs import Code, Volume
from protocols.echonet.entry import CLASSES, EchonetClass, Prop

WATER_METER = CLASSES.register(
    EchonetClass(
        0x0281,
        "water flow meter",
        device="water_meter",
        category="water",
        props=(
            Prop(0xE1, "flow unit", Code(0, 6), param="unit", poll="slow"),
            Prop(0xE0, "cumulative flow", Volume(), "volume_l_total", "L", poll="slow"),
            Prop(0xD0, "water classification", Code(), default=b"\x30"),
        ),
    )
)
