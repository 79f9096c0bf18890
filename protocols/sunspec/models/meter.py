"""AC meter models: 201/202/203/204 (single phase, split phase, wye and delta three phase; signed 16-bit
measurements with scale factors) and their float32 twins 211/212/213/214.  Within each family the layout
is one; only which points are mandatory differs (and 201 names its line-to-line voltages PPVph..).

At the grid connection point ``W`` is + import, - export (vendors differ: ``power_sign`` flips it);
``TotWhImp`` / ``TotWhExp`` are the import / export counters.
"""

from protocols.sunspec.points import MODELS, Emit, PointSpec, build_model, row

_PHASES = ("A", "B", "C")
_EMITS = (
    Emit("power_w", "W", "W", signed=True),
    Emit("import_wh_total", "TotWhImp", "Wh", counter=True),
    Emit("export_wh_total", "TotWhExp", "Wh", counter=True),
    Emit("frequency_hz", "Hz", "Hz", optional=True),
)
# What an emulated meter uses: watts and watt-hours whole, currents in 0.01 A, volts in 0.1 V.
_SCALE_FACTORS = {"A_SF": -2, "V_SF": -1, "Hz_SF": -2, "W_SF": 0, "TotWh_SF": 0}


def _with_phases(base: str, sf: str, units: str, per_phase: str, ptype: str = "int16") -> list[PointSpec]:
    return [row(base, ptype, sf, units), *(row(f"{base}{per_phase}{ph}", ptype, sf, units) for ph in _PHASES)]


def _meter(model_id: int, name: str) -> None:
    # 201 names the line-to-line voltages PPVph.., 203 names them PhVph..
    ll = "PPVph" if model_id == 201 else "PhVph"
    specs = [
        *_with_phases("A", "A_SF", "A", "ph"),
        row("A_SF", "sunssf"),
        *_with_phases("PhV", "V_SF", "V", "ph"),
        row("PPV", "int16", "V_SF", "V"),
        *(row(f"{ll}{pair}", "int16", "V_SF", "V") for pair in ("AB", "BC", "CA")),
        row("V_SF", "sunssf"),
        row("Hz", "int16", "Hz_SF", "Hz"),
        row("Hz_SF", "sunssf"),
        *_with_phases("W", "W_SF", "W", "ph"),
        row("W_SF", "sunssf"),
        *_with_phases("VA", "VA_SF", "VA", "ph"),
        row("VA_SF", "sunssf"),
        *_with_phases("VAR", "VAR_SF", "var", "ph"),
        row("VAR_SF", "sunssf"),
        *_with_phases("PF", "PF_SF", "Pct", "ph"),
        row("PF_SF", "sunssf"),
        *_with_phases("TotWhExp", "TotWh_SF", "Wh", "Ph", "acc32"),
        *_with_phases("TotWhImp", "TotWh_SF", "Wh", "Ph", "acc32"),
        row("TotWh_SF", "sunssf"),
        *_with_phases("TotVAhExp", "TotVAh_SF", "VAh", "Ph", "acc32"),
        *_with_phases("TotVAhImp", "TotVAh_SF", "VAh", "Ph", "acc32"),
        row("TotVAh_SF", "sunssf"),
        *_with_phases("TotVArhImpQ1", "TotVArh_SF", "varh", "Ph", "acc32"),
        *_with_phases("TotVArhImpQ2", "TotVArh_SF", "varh", "Ph", "acc32"),
        *_with_phases("TotVArhExpQ3", "TotVArh_SF", "varh", "Ph", "acc32"),
        *_with_phases("TotVArhExpQ4", "TotVArh_SF", "varh", "Ph", "acc32"),
        row("TotVArh_SF", "sunssf"),
        row("Evt", "bitfield32"),
    ]
    MODELS.register(
        build_model(
            model_id,
            name,
            105,
            specs,
            category="electricity",
            emits=_EMITS,
            scale_factors=_SCALE_FACTORS,
        )
    )


def _float_meter(model_id: int, name: str, float_of: int) -> None:
    def floats(base: str, units: str, per_phase: str = "ph") -> list[PointSpec]:
        return [
            row(base, "float32", units=units),
            *(row(f"{base}{per_phase}{p}", "float32", units=units) for p in _PHASES),
        ]

    specs = [
        *floats("A", "A"),
        *floats("PhV", "V"),
        row("PPV", "float32", units="V"),
        *(row(f"PPVph{pair}", "float32", units="V") for pair in ("AB", "BC", "CA")),
        row("Hz", "float32", units="Hz"),
        *floats("W", "W"),
        *floats("VA", "VA"),
        *floats("VAR", "var"),
        *floats("PF", "PF"),
        *floats("TotWhExp", "Wh", "Ph"),
        *floats("TotWhImp", "Wh", "Ph"),
        *floats("TotVAhExp", "VAh", "Ph"),
        *floats("TotVAhImp", "VAh", "Ph"),
        *(p for q in ("ImpQ1", "ImpQ2", "ExpQ3", "ExpQ4") for p in floats(f"TotVArh{q}", "varh")),
        row("Evt", "bitfield32"),
    ]
    MODELS.register(
        build_model(model_id, name, 124, specs, category="electricity", emits=_EMITS, float_of=float_of)
    )


_meter(201, "ac_meter_single_phase")
_meter(202, "ac_meter_split_phase")
_meter(203, "ac_meter_wye")
_meter(204, "ac_meter_delta")
_float_meter(211, "ac_meter_single_phase_float", 201)
_float_meter(212, "ac_meter_split_phase_float", 202)
_float_meter(213, "ac_meter_wye_float", 203)
_float_meter(214, "ac_meter_delta_float", 204)
