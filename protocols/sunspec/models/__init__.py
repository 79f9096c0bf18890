"""Every SunSpec model the project knows: one module each, registered by one import line below.

Importing a model module registers its entry in ``MODELS``.  Adding a model: README, "Add a SunSpec
model".
"""

from collections.abc import Sequence

from protocols.sunspec.points import BASE_ADDRESS, MODELS, Model

# isort: off
from protocols.sunspec.models import common  # noqa: F401
from protocols.sunspec.models import inverter  # noqa: F401
from protocols.sunspec.models import nameplate  # noqa: F401
from protocols.sunspec.models import meter  # noqa: F401
from protocols.sunspec.models import storage  # noqa: F401
from protocols.sunspec.models import battery  # noqa: F401
# isort: on

__all__ = ["MODELS", "Model", "chain_length", "model_addresses"]


def chain_length(model_ids: Sequence[int]) -> int:
    """Registers of a whole map: marker, the models, and the end marker."""
    return 2 + sum(MODELS[m].size for m in model_ids) + 2


def model_addresses(model_ids: Sequence[int], base: int = BASE_ADDRESS) -> dict[int, int]:
    """Protocol address of each model's ID register in a map holding ``model_ids`` in order."""
    addresses: dict[int, int] = {}
    address = base + 2
    for model_id in model_ids:
        addresses[model_id] = address
        address += MODELS[model_id].size
    return addresses
