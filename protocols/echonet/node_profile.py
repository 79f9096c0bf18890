"""The node profile object (0x0EF0): how a node lists the device objects it holds.

The emulator encodes its lists with ``node_profile_values``; the collector's discovery reads them back
with ``parse_instance_list`` (0xD6 answers, 0xD5 announcements).
"""

from __future__ import annotations

from collections.abc import Sequence

from protocols.echonet.codecs import Raw
from protocols.echonet.entry import Prop
from protocols.echonet.frame import EOJ, FrameError, pack_uint

NODE_PROFILE_CODE = 0x0EF0
MAX_LISTED_OBJECTS = 84  # what one instance list may carry (1 + 84 x 3 bytes fits a PDC)
MAX_LISTED_CLASSES = 8

NODE_PROFILE_PROPS: tuple[Prop, ...] = (
    Prop(0x80, "operating status", Raw(1), announce=True),
    Prop(0x82, "version information", Raw(4)),
    Prop(0x83, "identification number", Raw(17)),
    Prop(0x8A, "manufacturer code", Raw(3)),
    Prop(0xD3, "number of self-node instances", Raw(3)),
    Prop(0xD4, "number of self-node classes", Raw(2)),
    # 0xD5 is announce-only in the spec, but answering a Get for it is allowed.
    Prop(0xD5, "instance list notification", Raw(), announce=True),
    Prop(0xD6, "self-node instance list S", Raw()),
    Prop(0xD7, "self-node class list S", Raw()),
)


def node_profile_values(objects: Sequence[EOJ]) -> dict[int, bytes]:
    """0xD3-0xD7 of a node holding ``objects`` (the class count includes the node profile itself)."""
    classes: list[int] = []
    for eoj in objects:
        if eoj.cls not in classes:
            classes.append(eoj.cls)
    listed = b"".join(bytes(e) for e in objects[:MAX_LISTED_OBJECTS])
    class_list = b"".join(pack_uint(c, 2) for c in classes[:MAX_LISTED_CLASSES])
    count = bytes((min(len(objects), MAX_LISTED_OBJECTS),))
    return {
        0xD3: pack_uint(len(objects), 4)[1:],
        0xD4: pack_uint(len(classes) + 1, 2),
        0xD5: count + listed,
        0xD6: count + listed,
        0xD7: bytes((min(len(classes), MAX_LISTED_CLASSES),)) + class_list,
    }


def parse_instance_list(edt: bytes) -> tuple[EOJ, ...]:
    """The objects of a 0xD5/0xD6 instance list; FrameError when its count and length disagree."""
    if not edt:
        raise FrameError("instance list is empty")
    count = edt[0]
    if len(edt) != 1 + 3 * count:
        raise FrameError(f"instance list says {count} objects but carries {len(edt) - 1} bytes")
    return tuple(EOJ(edt[i], edt[i + 1], edt[i + 2]) for i in range(1, len(edt), 3))
