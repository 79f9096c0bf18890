"""A class the project does not ship, written the way README's "Add an ECHONET Lite class" says: one
module with its entry.  The test registers it inside ``CLASSES.temporarily`` so no other test sees it;
a real class registers itself with ``CLASSES.register(...)`` and one import line in
``protocols/echonet/classes/__init__.py``.

Power distribution board metering (0x0287): the board's own view of the home's grid connection.  Its
properties carry fields the household already has (``electricity``: power and the import counter), so
the emulator serves it and the collector reads it with no code of their own.
"""

from protocols.echonet.codecs import Counter, Signed
from protocols.echonet.entry import EchonetClass, Prop

DISTRIBUTION_BOARD = EchonetClass(
    0x0287,
    "power distribution board metering",
    device="distribution_board",
    category="electricity",
    props=(
        Prop(
            0xC6,
            "instantaneous power, main",
            Signed(4, -2_147_483_647, 2_147_483_645),
            "power_w",
            "W",
            poll="fast",
        ),
        Prop(0xC0, "cumulative energy, normal", Counter(), "import_wh_total", "Wh", poll="slow"),
    ),
)
