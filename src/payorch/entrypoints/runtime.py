"""How a long-running process runs: its event loop, its garbage collector, and the
ports it cannot bind."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

from payorch.settings import InvalidSettings


class CannotListen(OSError):
    """A port the server cannot bind: one line for the operator, not a traceback."""


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
