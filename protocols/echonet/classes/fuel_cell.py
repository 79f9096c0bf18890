"""Fuel cell, class 0x027C (household co-generation).  Its generation status (0xCB) says whether it
runs; the operation status (0x80) only says it is switched on."""

from protocols.echonet.codecs import Code, Counter, Flag, Unsigned
from protocols.echonet.entry import CLASSES, FAULT_STATUS, OPERATION_STATUS, EchonetClass, Prop, polled

FUEL_CELL = CLASSES.register(
    EchonetClass(
        0x027C,
        "fuel cell",
        device="fuel_cell",
        category="external_generation",
        props=(
            Prop(0xC4, "instantaneous generation", Unsigned(2, 65533), "power_w", "W", poll="fast"),
            # listed before 0x80: the first property that gives a field wins
            Prop(0xCB, "generation status", Flag(0x41, 0x42), "running", "bool", poll="fast", announce=True),
            polled(OPERATION_STATUS, "fast"),
            FAULT_STATUS,  # not polled; read when the device announces it
            Prop(0xC5, "cumulative generation", Counter(), "energy_wh_total", "Wh", poll="slow"),
            Prop(
                0xC2,
                "rated generation output",
                Unsigned(2, unset=b"\xff\xfe"),
                param="rated_w",
                rating="power_w",
            ),
            Prop(0xD2, "designated generation status", Code(0x41, 0x42), default=b"\x42"),  # load following
            Prop(0xD0, "system-interconnected type", Code(), default=b"\x00"),
        ),
    )
)
