"""The HTTP side: Prometheus metrics, liveness and readiness (inbound webhooks join here)."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from payorch.adapters.clock import SystemClock
from payorch.adapters.processors.simulated import AnswerChallenge
from payorch.app.payments import ProcessorEvents
from payorch.app.ports import Clock
from payorch.entrypoints.http import simulated_challenge
from payorch.entrypoints.http.stripe_webhooks import stripe_webhook_handler
from payorch.entrypoints.runtime import CannotListen

log = logging.getLogger("payorch.http")
MAX_BODY_BYTES = 256 * 1024


def build_app(
    registry: CollectorRegistry = REGISTRY,
    *,
    stripe_events: ProcessorEvents | None = None,
    stripe_webhook_secret: str = "",
    clock: Clock | None = None,
    ready: Callable[[], bool] = lambda: True,
    database_up: Callable[[], bool] = lambda: True,
    metrics_token: str = "",
    simulated_challenges: AnswerChallenge | None = None,
) -> web.Application:
    """`clock` judges how fresh a Stripe signature is. Stripe signs with the wall clock,
    so it is the system's even when the service's own clock is shifted for a demo.

    `/healthz` is liveness: 200 while the process answers. `/readyz` is readiness: 503
    once `ready()` is False (the server stopping or draining) or `database_up()` is
    (the database does not answer its probes), as gRPC health says NOT_SERVING then,
    so a load balancer sends this replica no new calls.

    `metrics_token`: when set, `/metrics` answers only a request bearing it
    (`Authorization: Bearer <token>`), 401 otherwise; the probes and Stripe's webhooks
    (signed on their own) stay open.

    `simulated_challenges`: the simulated processors' 3-D Secure page
    (`POST /simulated/3ds/{intent_id}`), test mode only: given only when no Stripe
    processor is configured (`Container.simulated_challenges`), absent otherwise."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    expected = metrics_token.encode()

    async def metrics(request: web.Request) -> web.Response:
        # The scheme is case-insensitive (RFC 6750); the token is compared in constant
        # time, as bytes (compare_digest takes only ASCII str).
        scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
        if expected and not (
            scheme.lower() == "bearer"
            and hmac.compare_digest(sent.encode("utf-8", "surrogateescape"), expected)
        ):
            return web.json_response(
                {"status": "unauthorized: send Authorization: Bearer <PAYORCH_METRICS_TOKEN>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        if not ready():
            return web.json_response({"status": "shutting down"}, status=503)
        if not database_up():
            return web.json_response({"status": "database unreachable"}, status=503)
        return web.json_response({"status": "ready"})

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if stripe_events is not None and stripe_webhook_secret:
        app.router.add_post(
            "/webhooks/stripe",
            stripe_webhook_handler(stripe_events, stripe_webhook_secret, clock or SystemClock()),
        )
    if simulated_challenges is not None:
        app.router.add_post(
            simulated_challenge.PATH, simulated_challenge.challenge_handler(simulated_challenges)
        )
    return app


def warn_if_metrics_open(host: str, metrics_token: str) -> None:
    """One warning at start when /metrics answers anyone who can reach a
    non-loopback address (the image's 0.0.0.0) with no token asked for."""
    if metrics_token:
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        log.warning(
            "/metrics on %s answers without a token: set PAYORCH_METRICS_TOKEN (or _FILE)"
            " unless the network keeps everyone but Prometheus out",
            host,
        )


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise CannotListen(f"cannot listen for HTTP on {host}:{port}: {exc.strerror}") from exc
    bound = port
    for address in runner.addresses:  # port 0: report the one picked
        bound = int(address[1])
    return runner, bound
