"""A local webhook receiver for tests: aiohttp on 127.0.0.1, scripted answers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str


@dataclass
class Receiver:
    """Answers each request with the next scripted status (204 when the script is empty)."""

    script: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    # When set, requests wait for it before answering (a hanging receiver).
    hold: asyncio.Event | None = None
    redirect_to: str = ""
    # When set, the answer's status and headers go out at once and its body (this
    # many bytes announced, a few sent) waits for `hold`.
    stalled_body_len: int = 0
    # Set when a request has come in.
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Received(headers, body, request.path))
        self.arrived.set()
        status = self.script.pop(0) if self.script else 204
        if self.stalled_body_len:
            stalled = web.StreamResponse(status=status)
            stalled.content_length = self.stalled_body_len
            await stalled.prepare(request)
            if self.hold is not None:
                await self.hold.wait()
            await stalled.write(b"x" * self.stalled_body_len)
            return stalled
        if self.hold is not None:
            await self.hold.wait()
        headers = {"Location": self.redirect_to} if self.redirect_to else {}
        return web.Response(status=status, headers=headers)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hooks"
        self.port = port
        return self

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()
