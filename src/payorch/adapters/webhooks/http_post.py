"""One signed webhook POST over aiohttp: to the address the guard checked, no redirects.
Apart from the sender so that a worker that delivers nothing never loads aiohttp."""

from __future__ import annotations

import socket
from collections.abc import Mapping

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from payorch.app.installment_ports import SendResult

USER_AGENT = "payorch-webhooks/1"


class PinnedResolver(AbstractResolver):
    """Answers every lookup with the one address already checked."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._family = socket.AF_INET6 if ":" in address else socket.AF_INET

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=self._address,
                port=port,
                family=self._family,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


async def post(
    url: str, address: str, payload: bytes, signed: Mapping[str, str], timeout_s: float
) -> SendResult:
    """POST `payload` with its signature headers to `url`, connecting to `address`."""
    headers = {**signed, "content-type": "application/json", "user-agent": USER_AGENT}
    connector = aiohttp.TCPConnector(
        resolver=PinnedResolver(address), use_dns_cache=False, force_close=True
    )
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                trust_env=False,  # no proxy from the environment
            ) as session,
            session.post(url, data=payload, headers=headers, allow_redirects=False) as resp,
        ):
            # The status is the answer; the body is never read (leaving closes the
            # connection), so a huge, slow or never-ending one changes nothing.
            ok = 200 <= resp.status < 300
            return SendResult(resp.status, "" if ok else f"HTTP {resp.status}")
    except TimeoutError:
        return SendResult(0, f"no answer within {timeout_s:g} s")
    except aiohttp.ClientError as exc:
        return SendResult(0, f"connection failed: {type(exc).__name__}")
    except OSError as exc:
        return SendResult(0, f"connection failed: {type(exc).__name__}")
