"""EV charger/discharger, class 0x027E.  Power: + charging the car, - feeding the house (V2H).

The car's battery (0xC2, 0xC4, 0xE2, 0xE4) cannot be read while it is unplugged: the device answers
Get_SNA for those, which is normal (``optional``).
"""

from protocols.echonet.codecs import Code, Counter, Flag, Raw, Signed, Span, Unsigned
from protocols.echonet.entry import CLASSES, FAULT_STATUS, OPERATION_STATUS, EchonetClass, Prop, polled

POWER = Signed(4, -999_999_999, 999_999_999)  # W, + charging the car
ENERGY = Unsigned(4, 999_999_999)  # Wh
RATED = Unsigned(4, unset=b"\xff\xff\xff\xfe")  # W; "no data" when the setting is 0 (not installed)
MODES = Code(
    codes=(0x40, 0x42, 0x43, 0x44, 0x46, 0x47, 0x48, 0x49)
)  # operation mode settings a Set may store
NOT_CONNECTED = 0x30  # 0x40..0x47: connected in some state; 0xFF: undefined

EV_CHARGER = CLASSES.register(
    EchonetClass(
        0x027E,
        "EV charger/discharger",
        device="ev_charger",
        category="ev",
        props=(
            Prop(0xD3, "instantaneous charge/discharge power", POWER, "power_w", "W", poll="fast"),
            Prop(
                0xE4,
                "remaining stored electricity 3",
                Unsigned(1, 100),
                "soc_pct",
                "%",
                poll="fast",
                optional=True,
            ),
            Prop(
                0xC7,
                "vehicle connection status",
                Flag(0x41, NOT_CONNECTED, off_only=True),
                "connected",
                "bool",
                poll="fast",
                announce=True,
            ),
            polled(OPERATION_STATUS, "fast"),
            FAULT_STATUS,  # not polled; read when the device announces it
            Prop(0xD8, "cumulative charge", Counter(), "charge_wh_total", "Wh", poll="slow"),
            Prop(0xD6, "cumulative discharge", Counter(), "discharge_wh_total", "Wh", poll="slow"),
            Prop(0xC2, "remaining dischargeable capacity 1", Unsigned(4, 999_999_999), optional=True),  # Wh
            Prop(0xC4, "remaining dischargeable capacity 3", Unsigned(1, 100), "soc_pct", "%", optional=True),
            Prop(0xC5, "rated charge power", RATED, param="charger_w", rating="power_w"),
            Prop(0xC6, "rated discharge power", RATED, rating="power_w"),
            Prop(0xDA, "operation mode setting", MODES, settable=True, announce=True, default=b"\x42"),
            Prop(0xE2, "remaining stored electricity 1", Unsigned(4, 999_999_999), optional=True),  # Wh
            # what the appendix requires a charger to answer beyond the above; the car's figures (Wh)
            # cannot be read while it is unplugged
            Prop(0xC0, "dischargeable capacity of the car's battery", ENERGY, optional=True),
            Prop(0xCE, "chargeable capacity of the car's battery", ENERGY, optional=True),
            Prop(0xCF, "remaining chargeable capacity of the car's battery", ENERGY, optional=True),
            Prop(0xD0, "used capacity of the car's battery", ENERGY, optional=True),
            Prop(0xC8, "min/max charging power", Span(), param="charger_w"),  # W
            Prop(0xC9, "min/max discharging power", Span()),  # W
            # min/max charging and discharging currents, 2 x uint16 in 0.1 A: 6 A .. 30 A
            Prop(0xCA, "min/max charging current", Raw(4), default=bytes.fromhex("003c012c")),
            Prop(0xCB, "min/max discharging current", Raw(4), default=bytes.fromhex("003c012c")),
            Prop(0xCC, "charger type", Code(0x11, 0x53), default=b"\x22"),  # DC, charge and discharge
            Prop(0xDC, "charging method", Code(0, 6), default=b"\x02"),  # surplus power
            Prop(0xDD, "discharging method", Code(0, 6), default=b"\x02"),  # load following
        ),
    )
)
