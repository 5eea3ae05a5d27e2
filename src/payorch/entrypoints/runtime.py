"""How a long-running process runs: its event loop, its garbage collector, and the
ports it cannot bind."""

from __future__ import annotations

import asyncio
import errno
import gc
import socket
from collections.abc import Callable

from payorch.settings import InvalidSettings


class CannotListen(OSError):
    """A port the server cannot bind: one line for the operator, not a traceback."""


# The bind failures an operator meets most, said plainly; any other is its strerror.
_BIND_FAILURES = {
    errno.EADDRINUSE: "the port is in use",
    errno.EADDRNOTAVAIL: "the address is not one of this host's",
}
_NO_REASON = "grpc does not say why (GRPC_VERBOSITY=debug logs it)"


def why_cannot_bind(address: str) -> str:
    """Why `address` ("host:port", "[v6]:port") cannot be bound, found by binding it
    here as grpc would (grpc says only "Failed to bind", whatever the cause)."""
    host, _, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit():
        return _NO_REASON  # a unix: socket, or no address at all
    try:
        found = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError):
        return f"the host {host!r} does not resolve to an address"
    for family, kind, proto, _, where in found:
        with socket.socket(family, kind, proto) as probe:
            # As grpc binds: a port left in TIME_WAIT is not "in use".
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(where)
            except OSError as exc:
                return _BIND_FAILURES.get(exc.errno or 0, exc.strerror or str(exc))
    return _NO_REASON


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop makes socket I/O and callbacks cheaper for grpc.aio and asyncpg."""
    if name == "asyncio":
        return None
    if name != "uvloop":
        raise InvalidSettings(f"PAYORCH_EVENT_LOOP must be uvloop or asyncio, not {name[:40]!r}")
    try:
        import uvloop
    except ImportError:  # a platform without uvloop: the standard loop serves as well
        return None
    return uvloop.new_event_loop


def tune_gc(threshold: int) -> None:
    """What start-up made (tables, compiled statements, descriptors, config) lives as long
    as the process: frozen, the collector stops walking it again and again. A payment
    makes a few thousand short-lived objects; a larger first generation collects them
    less often. Both cut the long pauses that showed as a p99 of 180-450 ms at a
    moderate load (docs/performance.md)."""
    gc.collect()
    gc.freeze()
    if threshold > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(threshold, gen1, gen2)
