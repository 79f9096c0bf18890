"""Model 124, basic storage controls: ``ChaState`` is the state of charge in percent, ``ChaSt`` the
charge state.  A battery that also has model 802 is read from 802; 124 fills what 802 leaves out."""

from protocols.sunspec.points import MODELS, Emit, FieldValue, PointValues, Rating, build_model, row

CHA_ST = {"OFF": 1, "EMPTY": 2, "DISCHARGING": 3, "CHARGING": 4, "FULL": 5, "HOLDING": 6, "TESTING": 7}
CHA_NAMES = {v: k.lower() for k, v in CHA_ST.items()}


def status(values: PointValues) -> tuple[dict[str, FieldValue], list[str]]:
    """state from ``ChaSt``."""
    cha = values.get("ChaSt")
    return ({"state": CHA_NAMES.get(cha, str(cha))} if isinstance(cha, int) else {}), []


STORAGE = MODELS.register(
    build_model(
        124,
        "storage",
        24,
        [
            row("WChaMax", "uint16", "WChaMax_SF", "W"),
            row("WChaGra", "uint16", "WChaDisChaGra_SF", "% WChaMax/sec"),
            row("WDisChaGra", "uint16", "WChaDisChaGra_SF", "% WChaMax/sec"),
            row("StorCtl_Mod", "bitfield16"),
            row("VAChaMax", "uint16", "VAChaMax_SF", "VA"),
            row("MinRsvPct", "uint16", "MinRsvPct_SF", "% WChaMax"),
            row("ChaState", "uint16", "ChaState_SF", "% AhrRtg"),
            row("StorAval", "uint16", "StorAval_SF", "AH"),
            row("InBatV", "uint16", "InBatV_SF", "V"),
            row("ChaSt", "enum16"),
            row("OutWRte", "int16", "InOutWRte_SF", "% WDisChaMax"),
            row("InWRte", "int16", "InOutWRte_SF", "% WChaMax"),
            *(row(f"InOutWRte_{t}Tms", "uint16", units="Secs") for t in ("Win", "Rvrt", "Rmp")),
            row("ChaGriSet", "enum16"),
            # the scale factors, in this order
            *(row(sf, "sunssf") for sf in ("WChaMax_SF", "WChaDisChaGra_SF", "VAChaMax_SF", "MinRsvPct_SF")),
            *(row(sf, "sunssf") for sf in ("ChaState_SF", "StorAval_SF", "InBatV_SF", "InOutWRte_SF")),
        ],
        category="battery",
        emits=(Emit("soc_pct", "ChaState", "%", optional=True),),
        scale_factors={"WChaMax_SF": 0, "WChaDisChaGra_SF": 0, "ChaState_SF": -1, "InBatV_SF": -1},
        status=status,
        status_points=("ChaSt",),
        ratings=(Rating("power_w", "WChaMax"),),
        fallback=True,
    )
)
