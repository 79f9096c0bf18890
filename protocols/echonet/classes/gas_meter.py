"""Gas meter, class 0x0282: cumulative gas (0xE0) in 0.001 m3 (= 1 L) per count."""

from protocols.echonet.codecs import Volume
from protocols.echonet.entry import CLASSES, EchonetClass, Prop

GAS_METER = CLASSES.register(
    EchonetClass(
        0x0282,
        "gas meter",
        device="gas_meter",
        category="gas",
        props=(Prop(0xE0, "cumulative gas", Volume(0.001), "volume_l_total", "L", poll="slow"),),
    )
)
