"""Inverter models: 101/102/103 (single, split, three phase; integers with scale factors) and their
float32 twins 111/112/113 (what an inverter switched to float mode shows).  Within each family the
layout is one; only which points are mandatory differs.

``W`` is the AC output of the PV inverter (>= 0); ``St`` its operating state, ``Evt1`` its alarms.
"""

from protocols.sunspec.points import (
    MODELS,
    Emit,
    FieldValue,
    PointSpec,
    PointValues,
    build_model,
    row,
    scaled_rows,
)

# Enumerations the emulator sets and collectors interpret.
INVERTER_ST = {
    "OFF": 1,
    "SLEEPING": 2,
    "STARTING": 3,
    "MPPT": 4,
    "THROTTLED": 5,
    "SHUTTING_DOWN": 6,
    "FAULT": 7,
    "STANDBY": 8,
}
INVERTER_EVT1_GROUND_FAULT = 1 << 0
INVERTER_EVT1_OVER_TEMP = 1 << 7
INVERTER_EVT1_HW_TEST_FAILURE = 1 << 15
_ST_NAMES = {v: k.lower() for k, v in INVERTER_ST.items()}
_RUNNING_ST = frozenset({INVERTER_ST["MPPT"], INVERTER_ST["THROTTLED"], INVERTER_ST["STARTING"]})


def status(values: PointValues) -> tuple[dict[str, FieldValue], list[str]]:
    """running and state from ``St``; fault from ``St`` or any ``Evt1`` bit."""
    st, evt1 = values.get("St"), values.get("Evt1")
    out: dict[str, FieldValue] = {}
    if isinstance(st, int):
        out["running"] = st in _RUNNING_ST
        out["state"] = _ST_NAMES.get(st, str(st))
    if not isinstance(st, int) and not isinstance(evt1, int):
        return out, ["fault"]
    out["fault"] = st == INVERTER_ST["FAULT"] or (isinstance(evt1, int) and evt1 != 0)
    return out, []


_LAYOUT: list[PointSpec] = [
    row("A", "uint16", "A_SF", "A"),
    *(row(f"Aph{ph}", "uint16", "A_SF", "A") for ph in "ABC"),
    row("A_SF", "sunssf"),
    *(row(f"PPVph{pair}", "uint16", "V_SF", "V") for pair in ("AB", "BC", "CA")),
    *(row(f"PhVph{ph}", "uint16", "V_SF", "V") for ph in "ABC"),
    row("V_SF", "sunssf"),
    *scaled_rows(("W", "int16", "W"), ("Hz", "uint16", "Hz"), ("VA", "int16", "VA"), ("VAr", "int16", "var")),
    *scaled_rows(
        ("PF", "int16", "Pct"), ("WH", "acc32", "Wh"), ("DCA", "uint16", "A"), ("DCV", "uint16", "V")
    ),
    *scaled_rows(("DCW", "int16", "W")),
    *(row(f"Tmp{where}", "int16", "Tmp_SF", "C") for where in ("Cab", "Snk", "Trns", "Ot")),
    row("Tmp_SF", "sunssf"),
    row("St", "enum16"),
    row("StVnd", "enum16"),
    *(row(name, "bitfield32") for name in ("Evt1", "Evt2", "EvtVnd1", "EvtVnd2", "EvtVnd3", "EvtVnd4")),
]
_FLOAT_UNITS = (
    ("W", "W"), ("Hz", "Hz"), ("VA", "VA"), ("VAr", "var"), ("PF", "Pct"), ("WH", "Wh"),
    ("DCA", "A"), ("DCV", "V"), ("DCW", "W"),
)  # fmt: skip
_EMITS = (
    Emit("power_w", "W", "W"),
    Emit("energy_wh_total", "WH", "Wh", counter=True),
    Emit("frequency_hz", "Hz", "Hz", optional=True),
)
# What an emulated inverter uses: watts and watt-hours whole, currents in 0.01 A, volts in 0.1 V.
_SCALE_FACTORS = {"A_SF": -2, "V_SF": -1, "W_SF": 0, "Hz_SF": -2, "WH_SF": 0, "Tmp_SF": -1}
_SCALE_FACTORS |= {"DCA_SF": -2, "DCV_SF": -1, "DCW_SF": 0}


_FLOAT_LAYOUT: list[PointSpec] = [
    *(row(name, "float32", units="A") for name in ("A", "AphA", "AphB", "AphC")),
    *(row(f"PPVph{pair}", "float32", units="V") for pair in ("AB", "BC", "CA")),
    *(row(f"PhVph{ph}", "float32", units="V") for ph in "ABC"),
    *(row(name, "float32", units=units) for name, units in _FLOAT_UNITS),
    *(row(f"Tmp{where}", "float32", units="C") for where in ("Cab", "Snk", "Trns", "Ot")),
    row("St", "enum16"),
    row("StVnd", "enum16"),
    *(row(name, "bitfield32") for name in ("Evt1", "Evt2", "EvtVnd1", "EvtVnd2", "EvtVnd3", "EvtVnd4")),
]


def _inverter(model_id: int, name: str, float_of: int | None = None) -> None:
    MODELS.register(
        build_model(
            model_id,
            name,
            50 if float_of is None else 60,
            _LAYOUT if float_of is None else _FLOAT_LAYOUT,
            category="pv",
            emits=_EMITS,
            scale_factors=_SCALE_FACTORS if float_of is None else {},
            status=status,
            status_points=("St", "Evt1"),
            float_of=float_of,
        )
    )


_inverter(101, "inverter_single_phase")
_inverter(102, "inverter_split_phase")
_inverter(103, "inverter_three_phase")
_inverter(111, "inverter_single_phase_float", float_of=101)
_inverter(112, "inverter_split_phase_float", float_of=102)
_inverter(113, "inverter_three_phase_float", float_of=103)
