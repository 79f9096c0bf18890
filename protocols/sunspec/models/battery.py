"""Model 802, battery base: state of charge, DC power (+ charging, - discharging), state and alarms."""

from protocols.sunspec.models import storage
from protocols.sunspec.points import MODELS, Emit, FieldValue, PointValues, Rating, build_model, row

BATTERY_STATE = {
    "DISCONNECTED": 1,
    "INITIALIZING": 2,
    "CONNECTED": 3,
    "STANDBY": 4,
    "SOC_PROTECTION": 5,
    "SUSPENDING": 6,
    "FAULT": 99,
}
BATTERY_TYPE_LITHIUM_ION = 4
BATTERY_EVT1_OTHER_ALARM = 1 << 25


def status(values: PointValues) -> tuple[dict[str, FieldValue], list[str]]:
    """state from ``ChaSt`` (as model 124 reads it); fault from ``State`` or any ``Evt1`` bit."""
    out, _ = storage.status(values)
    state, evt1 = values.get("State"), values.get("Evt1")
    if isinstance(state, int) or isinstance(evt1, int):
        out["fault"] = state == BATTERY_STATE["FAULT"] or (isinstance(evt1, int) and evt1 != 0)
    return out, []


BATTERY = MODELS.register(
    build_model(
        802,
        "battery",
        62,
        [
            row("AHRtg", "uint16", "AHRtg_SF", "Ah"),
            row("WHRtg", "uint16", "WHRtg_SF", "Wh"),
            *(row(name, "uint16", "WChaDisChaMax_SF", "W") for name in ("WChaRteMax", "WDisChaRteMax")),
            row("DisChaRte", "uint16", "DisChaRte_SF", "%WHRtg"),
            *(
                row(n, "uint16", "SoC_SF", "%WHRtg")
                for n in ("SoCMax", "SoCMin", "SocRsvMax", "SoCRsvMin", "SoC")
            ),
            row("DoD", "uint16", "DoD_SF", "%"),
            row("SoH", "uint16", "SoH_SF", "%"),
            row("NCyc", "uint32"),
            row("ChaSt", "enum16"),
            row("LocRemCtl", "enum16"),
            row("Hb", "uint16"),
            row("CtrlHb", "uint16"),
            row("AlmRst", "uint16"),
            row("Typ", "enum16"),
            row("State", "enum16"),
            row("StateVnd", "enum16"),
            row("WarrDt", "uint32"),
            *(row(name, "bitfield32") for name in ("Evt1", "Evt2", "EvtVnd1", "EvtVnd2")),
            *(row(name, "uint16", "V_SF", "V") for name in ("V", "VMax", "VMin")),
            row("CellVMax", "uint16", "CellV_SF", "V"),
            row("CellVMaxStr", "uint16"),
            row("CellVMaxMod", "uint16"),
            row("CellVMin", "uint16", "CellV_SF", "V"),
            row("CellVMinStr", "uint16"),
            row("CellVMinMod", "uint16"),
            row("CellVAvg", "uint16", "CellV_SF", "V"),
            row("A", "int16", "A_SF", "A"),
            row("AChaMax", "uint16", "AMax_SF", "A"),
            row("ADisChaMax", "uint16", "AMax_SF", "A"),
            row("W", "int16", "W_SF", "W"),
            row("ReqInvState", "enum16"),
            row("ReqW", "int16", "W_SF", "W"),
            row("SetOp", "enum16"),
            row("SetInvState", "enum16"),
            # the scale factors, in this order
            *(row(sf, "sunssf") for sf in ("AHRtg_SF", "WHRtg_SF", "WChaDisChaMax_SF", "DisChaRte_SF")),
            *(row(sf, "sunssf") for sf in ("SoC_SF", "DoD_SF", "SoH_SF", "V_SF")),
            *(row(sf, "sunssf") for sf in ("CellV_SF", "A_SF", "AMax_SF", "W_SF")),
        ],
        category="battery",
        emits=(Emit("soc_pct", "SoC", "%"), Emit("power_w", "W", "W", signed=True)),
        # what an emulated battery uses: SoC and volts in 0.1, capacity in 10 Wh steps, cells in mV
        scale_factors={
            "AHRtg_SF": 0,
            "WHRtg_SF": 1,
            "WChaDisChaMax_SF": 0,
            "SoC_SF": -1,
            "V_SF": -1,
            "CellV_SF": -3,
            "A_SF": -1,
            "AMax_SF": 0,
            "W_SF": 0,
            "SoH_SF": 0,
        },
        status=status,
        status_points=("State", "ChaSt", "Evt1"),
        ratings=(Rating("power_w", "WChaRteMax"), Rating("power_w", "WDisChaRteMax")),
    )
)
