"""`payorch serve`: the gRPC server, the HTTP port, background jobs, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from payorch.app.auth import Scope, hash_key
from payorch.app.failed_passes import log_failed_pass
from payorch.bootstrap import Container, bootstrap
from payorch.entrypoints.grpc.server import create_server, mark_serving
from payorch.entrypoints.http.app import build_app, start_http, warn_if_metrics_open
from payorch.entrypoints.installments_cli import serve_jobs
from payorch.entrypoints.logs import configure
from payorch.entrypoints.runtime import serving_address, tune_gc
from payorch.settings import Settings

log = logging.getLogger("payorch.serve")
DEMO_MERCHANT = "m_demo"


async def ensure_demo_key(container: Container, path: Path) -> None:
    """Local demo only: a key for m_demo written to `path` (0600) on first start."""
    existing = path.read_text().strip() if path.exists() else ""  # noqa: ASYNC240 - once at start
    if existing and await container.api_keys.find(hash_key(existing)) is not None:
        log.info("demo API key for %s in %s", DEMO_MERCHANT, path)
        return
    key = await container.api_keys.create(
        merchant_id=DEMO_MERCHANT, scope=Scope.MERCHANT, label="demo", now=container.clock.now()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # O_CREAT's mode applies only to a file it creates: a stale one keeps its own.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.plaintext + "\n")
    log.info("created a demo API key for %s in %s", DEMO_MERCHANT, path)


async def reconcile_forever(container: Container, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            stats = await container.payments.reconcile_pass()
            if stats.settled or stats.errors:
                log.info(
                    "reconciled %d payments (%d could not be: backed off)",
                    stats.settled,
                    stats.errors,
                )
        except Exception as exc:
            log_failed_pass(log, "reconciliation", exc, interval_s, container.storage_unreachable)


async def refresh_health_forever(container: Container, interval_s: float = 1.0) -> None:
    """Apply what time alone changes to processor health (windows age, cool-downs end),
    so the gRPC health status and the gauges move even when no payment comes in."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            container.health.refresh()
        except Exception:
            log.exception("processor health refresh failed")


def observability_jobs(container: Container) -> list[asyncio.Task[None]]:
    """The contract-violation writer, and the biweekly retrospective when configured;
    what is still buffered is written by container.close() on shutdown."""
    observed = container.observability
    jobs = [asyncio.create_task(observed.violations.run())]
    if observed.retrospective is not None:
        jobs.append(asyncio.create_task(observed.retrospective.run_forever()))
        log.info(
            "writing a retrospective every 14 days to %s", container.settings.retrospective_dir
        )
    return jobs


async def finish_claimed(workers: list[asyncio.Task[None]], within_s: float) -> None:
    """The scheduler and the dispatcher, told to stop, finish the charges and deliveries
    they claimed, within what is left of the grace period. Cancelled, a charge would stop
    mid-call with its payment PROCESSING and its installment claimed until the lease ran
    out; only what outlasts the grace period is."""
    if not workers:
        return
    _, late = await asyncio.wait(workers, timeout=max(0.0, within_s))
    if late:
        log.warning(
            "the grace period ended with claimed work in flight: cancelled; its claims"
            " are taken over when their lease runs out, its payments are reconciled"
        )
    for worker in late:
        worker.cancel()
    for worker in workers:
        with contextlib.suppress(asyncio.CancelledError):
            await worker


def on_stop_signal(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGTERM or SIGINT sets `stop` (the graceful path). A second one, once the first
    was received, exits at once: in-flight calls are cut off, and so are writes not yet
    committed (a payment whose write was committed stays; one left PROCESSING is
    reconciled), contract violations still buffered are lost."""

    def received(sig: signal.Signals) -> None:
        if not stop.is_set():
            stop.set()
            return
        log.warning(
            "%s again while shutting down: exiting now, without finishing in-flight calls",
            sig.name,
        )
        logging.shutdown()  # flushes the log handlers; os._exit would not
        os._exit(128 + sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, received, sig)


async def drain(seconds: float) -> None:
    """Health already says NOT_SERVING; calls are still taken meanwhile, so that load
    balancers polling health stop routing here before the listener closes."""
    if seconds > 0:
        log.info("draining: taking calls %.1f s more while health says NOT_SERVING", seconds)
        await asyncio.sleep(seconds)


async def run(settings: Settings) -> None:
    configure(settings.log_level)
    container = await bootstrap(settings, serving=True)
    if settings.demo_key_file:
        await ensure_demo_key(container, Path(settings.demo_key_file))
    closing = asyncio.Event()
    try:
        server, port, health_servicer = create_server(container, settings.listen, closing.is_set)
    except BaseException:
        await container.close()
        raise
    loop = asyncio.get_running_loop()
    # Before the server starts: a SIGTERM from then on takes the graceful path.
    stop = asyncio.Event()
    on_stop_signal(loop, stop)
    # Set at the first signal: background jobs claim no more, readiness says 503.
    stopping = asyncio.Event()
    try:
        await server.start()
        await mark_serving(health_servicer, container.health, container.database)
        app = build_app(
            stripe_events=container.processor_events,
            stripe_webhook_secret=settings.stripe_webhook_secret,
            ready=lambda: not stopping.is_set(),
            database_up=lambda: container.database.up,
            metrics_token=settings.metrics_token,
            simulated_challenges=(challenges := container.simulated_challenges()),
        )
        runner, http_port = await start_http(app, settings.http_host, settings.http_port)
        warn_if_metrics_open(settings.http_host, settings.metrics_token)
    except BaseException:
        # Stopped here, not left running into the closing event loop.
        await server.stop(None)
        await container.close()
        raise
    tune_gc(settings.gc_threshold)
    rpc = serving_address(settings.listen, port)
    # The first line on stdout says where we listen (tests read it).
    print(
        f"payorch serving gRPC on {rpc} and HTTP on {settings.http_host}:{http_port}",
        flush=True,
    )
    if challenges is not None:
        log.info(
            "test mode: simulated 3-D Secure answered at POST %s (payorch simulate-3ds)",
            "/simulated/3ds/{intent_id}",
        )
    loop_kind = type(asyncio.get_running_loop()).__module__.split(".")[0]
    log.info("serving on the %s event loop", loop_kind, extra={"rpc": rpc})

    jobs = [
        asyncio.create_task(reconcile_forever(container, settings.reconcile_interval_s)),
        asyncio.create_task(refresh_health_forever(container)),
        asyncio.create_task(container.database.run()),
    ]
    locks = contextlib.ExitStack()
    claiming = serve_jobs(container, settings, locks, stopping)
    jobs += observability_jobs(container)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: finishing in-flight calls (grace %.1f s)", settings.grace_period_s)
        stopping.set()
        await health_servicer.enter_graceful_shutdown()
        await drain(settings.shutdown_drain_s)
        grace_ends = loop.time() + settings.grace_period_s
        closing.set()
        await server.stop(settings.grace_period_s)
        await finish_claimed(claiming, grace_ends - loop.time())
        for job in jobs:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        await runner.cleanup()
        await container.close()
        locks.close()
        log.info("stopped")
