"""Model 1, common: who made the device and which one it is.  Every device's map starts with it; the
collector reads nothing from it."""

from protocols.sunspec.points import MODELS, build_model, row

COMMON = MODELS.register(
    build_model(
        1,
        "common",
        66,
        [
            row("Mn", "string", size=16),
            row("Md", "string", size=16),
            row("Opt", "string", size=8),
            row("Vr", "string", size=8),
            row("SN", "string", size=16),
            row("DA", "uint16"),
            row("Pad", "pad"),
        ],
    )
)
