"""Every ECHONET Lite class the project knows: one module each, registered by one import line below.

Importing a class module registers its entry in ``CLASSES``; the order of the lines is the order of
the objects in an emulated home's node and in its manifest.  Adding a class: README, "Add an ECHONET
Lite class".
"""

from protocols.echonet.entry import CLASSES, EchonetClass

# isort: off
from protocols.echonet.classes import smart_meter  # noqa: F401
from protocols.echonet.classes import solar  # noqa: F401
from protocols.echonet.classes import battery  # noqa: F401
from protocols.echonet.classes import water_meter  # noqa: F401
from protocols.echonet.classes import gas_meter  # noqa: F401
from protocols.echonet.classes import fuel_cell  # noqa: F401
from protocols.echonet.classes import ev_charger  # noqa: F401
# isort: on

__all__ = ["CLASSES", "EchonetClass"]
