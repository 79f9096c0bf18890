"""Storage battery, class 0x027D.  Power and current: + charging, - discharging."""

from protocols.echonet.codecs import Choice, Code, Counter, Signed, Span, Unsigned
from protocols.echonet.entry import CLASSES, FAULT_STATUS, OPERATION_STATUS, EchonetClass, Prop, polled
from protocols.echonet.frame import pack_uint

WORKING_STATE = {
    0x40: "other",
    0x41: "rapid_charging",
    0x42: "charging",
    0x43: "discharging",
    0x44: "standby",
    0x45: "test",
    0x46: "auto",
    0x48: "restart",
    0x49: "recalc",
}
POWER = Signed(4, -999_999_999, 999_999_999)  # W, + charging
ENERGY = Unsigned(4, 999_999_999)  # Wh
AMOUNT = Unsigned(4, 999_999_999, 1)  # Wh, 1..999,999,999
MODES = Code(
    codes=(0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x48, 0x49)
)  # operation mode settings a Set may store

BATTERY = CLASSES.register(
    EchonetClass(
        0x027D,
        "storage battery",
        device="battery",
        category="battery",
        props=(
            Prop(0xD3, "instantaneous charge/discharge power", POWER, "power_w", "W", poll="fast"),
            Prop(0xE4, "remaining stored electricity 3", Unsigned(1, 100), "soc_pct", "%", poll="fast"),
            Prop(
                0xCF,
                "working operation status",
                Choice(WORKING_STATE),
                "state",
                "enum",
                poll="fast",
                announce=True,
            ),
            polled(OPERATION_STATUS, "fast"),
            polled(FAULT_STATUS, "fast"),
            Prop(0xA8, "AC cumulative charge", Counter(), "charge_wh_total", "Wh", poll="slow"),
            Prop(0xA9, "AC cumulative discharge", Counter(), "discharge_wh_total", "Wh", poll="slow"),
            Prop(0xD0, "rated energy", Unsigned(4, unset=b"\xff\xff\xff\xfe"), param="capacity_wh"),
            Prop(0xD6, "cumulative discharge", Counter(), "discharge_wh_total", "Wh"),
            Prop(0xD8, "cumulative charge", Counter(), "charge_wh_total", "Wh"),
            Prop(0xDA, "operation mode setting", MODES, settable=True, announce=True, default=b"\x46"),
            Prop(0xE2, "remaining stored electricity 1", Unsigned(4, 999_999_999)),  # Wh
            Prop(0xE6, "battery type", Code(), default=b"\x04"),
            # what the appendix requires a battery to answer beyond the above (Wh unless said)
            Prop(0xA0, "AC effective capacity, charging", ENERGY),
            Prop(0xA1, "AC effective capacity, discharging", ENERGY),
            Prop(0xA2, "AC chargeable capacity", ENERGY),
            Prop(0xA3, "AC dischargeable capacity", ENERGY),
            Prop(0xA4, "AC chargeable energy now", ENERGY),
            Prop(0xA5, "AC dischargeable energy now", ENERGY),
            Prop(0xAA, "AC charge amount setting", AMOUNT, settable=True, default=pack_uint(5_000, 4)),
            Prop(0xAB, "AC discharge amount setting", AMOUNT, settable=True, default=pack_uint(5_000, 4)),
            Prop(0xC1, "charging method", Code(0, 4), default=b"\x02"),  # surplus charging
            Prop(0xC2, "discharging method", Code(0, 4), default=b"\x02"),  # load following
            Prop(0xC8, "min/max charging power", Span(), param="rated_w", rating="power_w"),  # W
            Prop(0xC9, "min/max discharging power", Span(), param="rated_w", rating="power_w"),  # W
            Prop(0xDB, "system-interconnected type", Code(0, 2), default=b"\x00"),
        ),
    )
)
