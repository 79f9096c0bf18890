"""Models 201 (single phase) and 203 (wye three phase) AC meters: one layout, signed 16-bit measurements.

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


_meter(201, "ac_meter_single_phase")
_meter(203, "ac_meter_wye")
