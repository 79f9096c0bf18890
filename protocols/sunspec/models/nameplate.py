"""Models 120 (nameplate ratings) and 121 (basic settings) of an inverter: what it is built for.

The collector emits nothing from them; ``WRtg`` (continuous power rating) and ``WMax`` (the maximum
output it is set to) bound the inverter's ``power_w``, so a value no such inverter can deliver is
refused rather than stored (``collector.plausibility``).
"""

from protocols.sunspec.points import MODELS, Rating, build_model, row, scaled_rows

DER_TYPE_PV = 4
DER_TYPE_PV_STOR = 82

NAMEPLATE = MODELS.register(
    build_model(
        120,
        "nameplate",
        26,
        [
            row("DERTyp", "enum16"),
            *scaled_rows(("WRtg", "uint16", "W"), ("VARtg", "uint16", "VA")),
            *(row(f"VArRtgQ{q}", "int16", "VArRtg_SF", "var") for q in "1234"),
            row("VArRtg_SF", "sunssf"),
            *scaled_rows(("ARtg", "uint16", "A")),
            *(row(f"PFRtgQ{q}", "int16", "PFRtg_SF", "cos()") for q in "1234"),
            row("PFRtg_SF", "sunssf"),
            *scaled_rows(("WHRtg", "uint16", "Wh"), ("AhrRtg", "uint16", "AH")),
            *scaled_rows(("MaxChaRte", "uint16", "W"), ("MaxDisChaRte", "uint16", "W")),
            row("Pad", "pad"),
        ],
        ratings=(Rating("power_w", "WRtg"),),
        # what an emulated inverter uses: watts and volt-amperes whole, amperes in 0.1 A, PF in 0.01
        scale_factors={"WRtg_SF": 0, "VARtg_SF": 0, "VArRtg_SF": 0, "ARtg_SF": -1, "PFRtg_SF": -2},
    )
)

SETTINGS = MODELS.register(
    build_model(
        121,
        "settings",
        30,
        [
            row("WMax", "uint16", "WMax_SF", "W"),
            row("VRef", "uint16", "VRef_SF", "V"),
            row("VRefOfs", "int16", "VRefOfs_SF", "V"),
            row("VMax", "uint16", "VMinMax_SF", "V"),
            row("VMin", "uint16", "VMinMax_SF", "V"),
            row("VAMax", "uint16", "VAMax_SF", "VA"),
            *(row(f"VArMaxQ{q}", "int16", "VArMax_SF", "var") for q in "1234"),
            row("WGra", "uint16", "WGra_SF", "% WMax/sec"),
            *(row(f"PFMinQ{q}", "int16", "PFMin_SF", "cos()") for q in "1234"),
            row("VArAct", "enum16"),
            row("ClcTotVA", "enum16"),
            row("MaxRmpRte", "uint16", "MaxRmpRte_SF", "% WGra"),
            row("ECPNomHz", "uint16", "ECPNomHz_SF", "Hz"),
            row("ConnPh", "enum16"),
            *(row(sf, "sunssf") for sf in ("WMax_SF", "VRef_SF", "VRefOfs_SF", "VMinMax_SF", "VAMax_SF")),
            *(
                row(sf, "sunssf")
                for sf in ("VArMax_SF", "WGra_SF", "PFMin_SF", "MaxRmpRte_SF", "ECPNomHz_SF")
            ),
        ],
        ratings=(Rating("power_w", "WMax"),),
    )
)
