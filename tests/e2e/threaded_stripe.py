"""The fake Stripe (tests.fakes.fake_stripe) for tests whose Stripe client is a real
server process: it runs on an event loop of its own thread, so the test's thread can
drive gRPC calls, and it outlives a server killed under it (its ledger is then the
truth of what was charged)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from tests.fakes.fake_stripe import FakeStripe, Hold, RecordedRequest

_T = TypeVar("_T")


class ThreadedFakeStripe:
    """FakeStripe on an event loop of its own thread. Everything touching the fake goes
    through that loop (``call``), as its state is the loop's."""

    def __init__(self, api_key: str, *, timeout_s: float = 30.0) -> None:
        self._timeout_s = timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.api_key = api_key
        self.fake: FakeStripe = self._run(FakeStripe(api_key=api_key).start())

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout_s)

    def call(self, fn: Callable[[FakeStripe], _T]) -> _T:
        """``fn(fake)`` on the fake's loop (to inject faults, read its ledger)."""

        async def run() -> _T:
            return fn(self.fake)

        return self._run(run())

    def server_env(self) -> dict[str, str]:
        """The settings that point a server's Stripe adapter at this fake."""
        return {"PAYORCH_STRIPE_API_KEY": self.api_key, "PAYORCH_STRIPE_API_BASE": self.fake.url}

    def recorded(self) -> list[RecordedRequest]:
        return self.call(lambda fake: list(fake.requests))

    def hold(self) -> Hold:
        """A new Hold, made on the fake's loop (for ``Fault.stall``/``Fault.slow``)."""
        return self.call(lambda _fake: Hold())

    def wait_reached(self, hold: Hold, timeout_s: float = 30.0) -> None:
        """Wait until a request waits at ``hold``; TimeoutError if none came."""
        self._run(asyncio.wait_for(hold.reached.wait(), timeout_s))

    def release(self, hold: Hold) -> None:
        """Let the held request go on, and wait until the fake has done with every
        request (the held one processed, or dropped)."""
        self.call(lambda _fake: hold.release())
        self.wait_idle()

    def wait_idle(self) -> None:
        self._run(self.fake.wait_idle())

    def close(self) -> None:
        self._run(self.fake.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
