"""Household solar power generation, class 0x0279 (the PV inverter)."""

from protocols.echonet.codecs import Code, Counter, Unsigned
from protocols.echonet.entry import CLASSES, FAULT_STATUS, OPERATION_STATUS, EchonetClass, Prop, polled

SOLAR = CLASSES.register(
    EchonetClass(
        0x0279,
        "household solar power generation",
        device="solar",
        category="pv",
        props=(
            Prop(0xE0, "instantaneous generation", Unsigned(2, 65533), "power_w", "W", poll="fast"),
            polled(OPERATION_STATUS, "fast"),
            polled(FAULT_STATUS, "fast"),
            Prop(0xE1, "cumulative generation", Counter(), "energy_wh_total", "Wh", poll="slow"),
            Prop(0xA0, "output power control 1", Code(0, 100), settable=True, default=b"\x64"),
            Prop(0xD0, "system-interconnected type", Code(), default=b"\x00"),
            Prop(0xD1, "output restraint status", Code(0x41, 0x44)),  # follows 0xA0
            Prop(0xE3, "cumulative energy sold", Counter(), "export_wh_total", "Wh"),
            Prop(
                0xE8,
                "rated output, grid-tied",
                Unsigned(2, unset=b"\xff\xff"),
                param="rated_w",
                rating="power_w",
            ),
            Prop(0xC1, "FIT contract type", Code(0x41, 0x43), default=b"\x41"),  # FIT
            Prop(0xC2, "self-consumption type", Code(0x41, 0x43), default=b"\x41"),  # with self-consumption
        ),
    )
)
