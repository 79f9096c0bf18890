"""Loopback ports and /16 prefixes for one test run, chosen so that runs sharing the machine never meet.

Every test that starts emulated homes or servers takes its addresses from here: a TCP port the kernel
hands out, and a `127.x` prefix that no one on the machine is using right now. Linux routes all of
127.0.0.0/8 to the loopback device, so each run can give its homes their own /16; a prefix is in use
when ECHONET Lite's port 3610 is bound on its first home or its controller address.
"""

from __future__ import annotations

import itertools
import os
import random
import socket

ECHONET_PORT = 3610
FIRST, LAST = 2, 250  # 127.0/16 and 127.1/16 are the usual loopback addresses other software binds

# one sequence per process, starting at a place drawn from the pid: two runs start far apart, and one run
# never hands out the same prefix twice while it has prefixes left
_order = list(range(FIRST, LAST + 1))
random.Random(os.getpid()).shuffle(_order)
_next = itertools.cycle(_order)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` at this moment (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_prefix() -> str:
    """A `127.x` prefix whose home and controller addresses have port 3610 free.

    Homes of a fleet take `<prefix>.0.1` upwards and a test's controller `<prefix>.255.x`, so both are
    probed; a prefix another run (or this one) has bound is passed over."""
    for _ in range(len(_order)):
        prefix = f"127.{next(_next)}"
        if all(_udp_free(f"{prefix}.{host}") for host in ("0.1", "255.1", "254.1")):
            return prefix
    raise RuntimeError("no free 127.x/16 prefix: every one has port 3610 bound")


def _udp_free(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, ECHONET_PORT))
        except OSError:
            return False
    return True
