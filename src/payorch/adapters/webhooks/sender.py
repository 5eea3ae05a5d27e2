"""Sends a signed webhook over HTTP: to the address the guard checked, no redirects."""

from __future__ import annotations

from collections.abc import Sequence

from payorch.adapters.webhooks.url_guard import UrlGuard, UrlRefused
from payorch.app.installment_ports import SendResult, UnsafeUrl
from payorch.webhooks import headers_for


class AiohttpWebhookSender:
    def __init__(self, guard: UrlGuard) -> None:
        self._guard = guard

    async def check_url(self, url: str) -> None:
        try:
            await self._guard.check(url)
        except UrlRefused as exc:
            raise UnsafeUrl(str(exc)) from exc

    async def send(
        self,
        url: str,
        *,
        secrets: Sequence[str],
        webhook_id: str,
        timestamp: int,
        body: str,
        timeout_s: float,
    ) -> SendResult:
        try:
            # Again at every delivery: what a name resolves to may have changed.
            checked = await self._guard.check(url)
        except UrlRefused as exc:
            return SendResult(0, f"refused: {exc}")
        payload = body.encode()
        signed = headers_for(secrets, webhook_id, timestamp, payload)
        # Imported by the first delivery: a worker started with --no-webhooks never
        # loads aiohttp (0.1-0.2 s of its start).
        from payorch.adapters.webhooks.http_post import post

        return await post(url, checked.address, payload, signed, timeout_s)
