"""`payorch installments|scheduler|webhooks`: client commands for the InstallmentService,
the scheduler and webhook dispatcher as processes, and a tiny verifying receiver."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from payorch.domain.money import Currency, format_minor, parse_decimal_amount
from payorch.entrypoints import cli_arguments

if TYPE_CHECKING:
    from aiohttp import web

    from payments.installments.v1 import installments_pb2 as pb
    from payments.plan.v1 import plan_pb2
    from payorch.app.database_readiness import DatabaseReadiness

# gRPC and the API's messages are imported by the client commands that use them: the
# scheduler and dispatcher processes never load them.

Flags = Callable[[argparse.ArgumentParser], None]


def _base() -> Any:
    from payorch.entrypoints import cli

    return cli


# -- client side ----------------------------------------------------------------------
def _call(args: argparse.Namespace, method: str, request: Any, made_up_request_id: str = "") -> int:
    import grpc

    from payments.installments.v1 import installments_pb2_grpc as pb_grpc

    cli = _base()
    table = getattr(args, "table", False)
    metadata = cli._metadata(args)  # a key it cannot send is refused before any connection
    with cli.channel(args) as ch:
        stub = pb_grpc.InstallmentServiceStub(ch)  # type: ignore[no-untyped-call]
        try:
            response = getattr(stub, method)(request, metadata=metadata, timeout=args.timeout)
        except grpc.RpcError as exc:
            cli.print_failure(exc, made_up_request_id, metadata=metadata)
            return 1
    if table and response.HasField("plan"):
        print(format_plan(response.plan))
    else:
        cli._print(response)
    return 0


def _amount(m: plan_pb2.Money) -> str:
    # Currency(), not parse(): a plan stored in a code ISO has withdrawn since prints too.
    return f"{format_minor(m.amount_minor, Currency(m.currency))} {m.currency}"


def _when(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return str(ts.ToDatetime().strftime("%Y-%m-%d %H:%M"))


def _short(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def format_plan(plan: pb.InstallmentPlan) -> str:
    """A plan as a small table: the schedule, each installment's attempts and errors."""
    from payments.installments.v1 import installments_pb2 as pb

    lines = [
        f"plan {plan.plan_id}  order {plan.order_id}  total {_amount(plan.total)}  "
        f"status {_short(pb.PlanStatus.Name(plan.status), 'PLAN_STATUS_')}",
        f"paid {plan.paid_count}/{plan.installment_count}: {_amount(plan.paid)} paid, "
        f"{_amount(plan.remaining)} left; dunning days {list(plan.dunning_days)}",
        f"{'#':>2}  {'amount':>12}  {'due':16}  {'status':12}  {'tries':>5}  "
        f"{'next attempt':16}  last error",
    ]
    for i in plan.installments:
        status = _short(pb.InstallmentStatus.Name(i.status), "INSTALLMENT_STATUS_")
        error = f"{i.last_error_code}: {i.last_error}" if i.last_error_code else ""
        lines.append(
            f"{i.sequence:>2}  {_amount(i.amount):>12}  {_when(i.due_at):16}  {status:12}  "
            f"{i.attempts:>5}  {_when(i.next_attempt_at):16}  {error}".rstrip()
        )
    return "\n".join(lines)


def _money(amount: str, currency: Currency) -> plan_pb2.Money:
    """InvalidAmount for more decimals than the currency has (`payorch` says so)."""
    from payments.plan.v1 import plan_pb2

    minor = parse_decimal_amount(amount, currency) if "." in amount else int(amount)
    return plan_pb2.Money(amount_minor=minor, currency=currency.code)


def default_plan_request_id(order_id: str) -> str:
    """The idempotency key of a create without --request-id: one plan per order, so the
    same command run again after its answer was lost gets that plan, never a second one
    (and a different total or method for the order is refused, ALREADY_EXISTS)."""
    return f"plan-{order_id.strip()}"


def cmd_create(args: argparse.Namespace) -> int:
    from payments.installments.v1 import installments_pb2 as pb

    request_id = args.request_id or default_plan_request_id(args.order_id)
    request = pb.CreateInstallmentPlanRequest(
        merchant_id=args.merchant or "",
        request_id=request_id,
        order_id=args.order_id,
        total=_money(args.amount, args.currency),
        payment_method=args.payment_method,
        customer_id=args.customer,
    )
    return _call(args, "CreateInstallmentPlan", request, "" if args.request_id else request_id)


def cmd_get(args: argparse.Namespace) -> int:
    from payments.installments.v1 import installments_pb2 as pb

    return _call(args, "GetInstallmentPlan", pb.GetInstallmentPlanRequest(plan_id=args.plan_id))


def cmd_list(args: argparse.Namespace) -> int:
    from payments.installments.v1 import installments_pb2 as pb

    status = f"PLAN_STATUS_{args.status.upper()}" if args.status else None
    return _call(
        args,
        "ListInstallmentPlans",
        pb.ListInstallmentPlansRequest(
            page_size=args.page_size,
            page_token=args.page_token or "",
            status=status,
            order_id=args.order_id or "",
            customer_id=args.customer or "",
        ),
    )


EXPORT_COLUMNS = (
    "plan_id",
    "merchant_id",
    "order_id",
    "customer_id",
    "plan_status",
    "currency",
    "sequence",
    "amount",
    "due_at",
    "status",
    "attempts",
    "next_attempt_at",
    "paid_at",
    "payment_id",
    "last_error_code",
    "last_error",
)
# A cell a spreadsheet would read as a formula (CSV injection): written as text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def _iso(ts: Any) -> str:
    return "" if not ts.seconds and not ts.nanos else ts.ToDatetime().isoformat() + "Z"


def export_rows(plan: pb.InstallmentPlan) -> list[list[str]]:
    """One CSV row per installment of `plan` (EXPORT_COLUMNS), amounts in major units."""
    from payments.installments.v1 import installments_pb2 as pb

    currency = Currency.parse(plan.total.currency)
    plan_status = _short(pb.PlanStatus.Name(plan.status), "PLAN_STATUS_")
    return [
        [
            plan.plan_id,
            plan.merchant_id,
            _cell(plan.order_id),
            plan.payment_method.customer_id,
            plan_status,
            currency.code,
            str(i.sequence),
            format_minor(i.amount.amount_minor, currency),
            _iso(i.due_at),
            _short(pb.InstallmentStatus.Name(i.status), "INSTALLMENT_STATUS_"),
            str(i.attempts),
            _iso(i.next_attempt_at),
            _iso(i.paid_at),
            i.payment_id,
            i.last_error_code,
            _cell(i.last_error),
        ]
        for i in plan.installments
    ]


def cmd_export(args: argparse.Namespace) -> int:
    """Every plan the filters select, newest first, as CSV on stdout: one row per
    installment, every page of ListInstallmentPlans in turn."""
    import grpc

    from payments.installments.v1 import installments_pb2 as pb
    from payments.installments.v1 import installments_pb2_grpc as pb_grpc

    cli = _base()
    metadata = cli._metadata(args)
    status = f"PLAN_STATUS_{args.status.upper()}" if args.status else None
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(EXPORT_COLUMNS)
    token = ""
    with cli.channel(args) as ch:
        stub = pb_grpc.InstallmentServiceStub(ch)  # type: ignore[no-untyped-call]
        while True:
            request = pb.ListInstallmentPlansRequest(
                page_size=100,
                page_token=token,
                status=status,
                order_id=args.order_id or "",
                customer_id=args.customer or "",
            )
            try:
                page = stub.ListInstallmentPlans(request, metadata=metadata, timeout=args.timeout)
            except grpc.RpcError as exc:
                sys.stdout.flush()
                cli.print_failure(exc, "", metadata=metadata)
                return 1
            for plan in page.plans:
                out.writerows(export_rows(plan))
            sys.stdout.flush()
            token = page.next_page_token
            if not token:
                return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from payments.installments.v1 import installments_pb2 as pb

    return _call(
        args,
        "CancelInstallmentPlan",
        pb.CancelInstallmentPlanRequest(plan_id=args.plan_id, reason=args.reason or ""),
    )


def cmd_retry(args: argparse.Namespace) -> int:
    # Always under an idempotency key: the command run again with --request-id after its
    # answer was lost gets what that retry came to, never a second charge.
    from payments.installments.v1 import installments_pb2 as pb

    request_id = args.request_id or f"retry-{uuid.uuid4()}"
    return _call(
        args,
        "RetryInstallment",
        pb.RetryInstallmentRequest(installment_id=args.installment_id, request_id=request_id),
        "" if args.request_id else request_id,
    )


def cmd_endpoint_create(args: argparse.Namespace) -> int:
    # Always under an idempotency key: the command run again with --request-id after its
    # answer was lost gets the endpoint (and, within a day, its secret), never a second.
    from payments.installments.v1 import installments_pb2 as pb

    request_id = args.request_id or f"endpoint-{uuid.uuid4()}"
    return _call(
        args,
        "CreateWebhookEndpoint",
        pb.CreateWebhookEndpointRequest(
            merchant_id=args.merchant or "",
            url=args.url,
            description=args.description or "",
            event_types=args.event_type or [],
            request_id=request_id,
        ),
        "" if args.request_id else request_id,
    )


def cmd_endpoint_list(args: argparse.Namespace) -> int:
    from payments.installments.v1 import installments_pb2 as pb

    return _call(args, "ListWebhookEndpoints", pb.ListWebhookEndpointsRequest())


def cmd_endpoint_delete(args: argparse.Namespace) -> int:
    from payments.installments.v1 import installments_pb2 as pb

    return _call(
        args, "DeleteWebhookEndpoint", pb.DeleteWebhookEndpointRequest(endpoint_id=args.endpoint_id)
    )


def cmd_endpoint_enable(args: argparse.Namespace) -> int:
    from payments.installments.v1 import installments_pb2 as pb

    return _call(
        args, "EnableWebhookEndpoint", pb.EnableWebhookEndpointRequest(endpoint_id=args.endpoint_id)
    )


def cmd_endpoint_rotate(args: argparse.Namespace) -> int:
    from payments.installments.v1 import installments_pb2 as pb

    request = pb.RotateWebhookSecretRequest(endpoint_id=args.endpoint_id)
    if args.overlap_hours is not None:
        request.overlap_hours = args.overlap_hours
    return _call(args, "RotateWebhookSecret", request)


def cmd_deliveries(args: argparse.Namespace) -> int:
    from payments.installments.v1 import installments_pb2 as pb

    status = f"DELIVERY_STATUS_{args.status.upper()}" if args.status else None
    return _call(
        args,
        "ListWebhookDeliveries",
        pb.ListWebhookDeliveriesRequest(
            page_size=args.page_size,
            page_token=args.page_token or "",
            status=status,
            endpoint_id=args.endpoint or "",
        ),
    )


_BULK_FLAGS = ("since", "until", "dead", "type", "dry_run", "database_url")


def cmd_redeliver(args: argparse.Namespace) -> int:
    """One delivery again (RedeliverWebhook), or with --endpoint what an endpoint missed."""
    from payments.installments.v1 import installments_pb2 as pb

    if args.endpoint is None:
        if not args.delivery_id:
            args.refuse("give a delivery id, or --endpoint ID with --since and --until or --dead")
        if any(getattr(args, name) for name in _BULK_FLAGS):
            args.refuse(
                "--since, --until, --dead, --type, --dry-run and --database-url go with --endpoint"
            )
        return _call(
            args, "RedeliverWebhook", pb.RedeliverWebhookRequest(delivery_id=args.delivery_id)
        )
    if args.delivery_id:
        args.refuse("give a delivery id or --endpoint, not both")
    return _redeliver_endpoint(args)


def _redeliver_endpoint(args: argparse.Namespace) -> int:
    """Queue again, on the database, what an endpoint was not delivered (an operator's
    command, as `payorch prune`: it may take many transactions, which no single call
    with a deadline would)."""
    from payorch.app.webhook_delivery import (
        CannotRedeliver,
        EndpointNotFound,
        InvalidRedelivery,
        redelivery_names,
    )
    from payorch.bootstrap import bootstrap

    window = args.since is not None or args.until is not None
    if window == args.dead:
        args.refuse("give --since and --until, or --dead")
    if window and (args.since is None or args.until is None):
        args.refuse("give both --since and --until")
    types = args.type or []
    try:  # refused before the database is opened
        redelivery_names(args.since, args.until, args.dead, types)
    except InvalidRedelivery as exc:
        args.refuse(str(exc))
    settings = _worker_settings(args)

    async def main() -> int:
        # Charges nothing: the processors it is given are not checked. Its clock is the
        # service's (PAYORCH_CLOCK_OFFSET), as the deliveries' other times are.
        container = await bootstrap(settings, charging=False)
        try:
            done = await container.installments.endpoints.redeliver_missed(
                args.endpoint,
                since=args.since,
                until=args.until,
                dead=args.dead,
                types=types,
                dry_run=args.dry_run,
            )
        except EndpointNotFound:
            print("payorch webhooks redeliver: no such endpoint", file=sys.stderr)
            return 1
        except InvalidRedelivery as exc:
            print(f"payorch webhooks redeliver: {exc}", file=sys.stderr)
            return 2
        except CannotRedeliver as exc:
            print(f"payorch webhooks redeliver: {exc}", file=sys.stderr)
            return 1
        finally:
            await container.close()
        print(json.dumps(done.as_dict()), flush=True)
        return 0

    return asyncio.run(main())


# -- server side: the scheduler and the dispatcher as processes ----------------------------
def _worker_settings(args: argparse.Namespace) -> Any:
    from payorch.settings import Settings

    base = _base()._server_settings(args)
    overrides = {
        "scheduler_batch_size": getattr(args, "batch_size", None),
        "scheduler_interval_s": getattr(args, "interval", None),
    }
    return Settings(**{**base.__dict__, **{k: v for k, v in overrides.items() if v is not None}})


def _clock(args: argparse.Namespace) -> Any:
    from payorch.adapters.clock import OffsetClock

    # --now is checked by its argument type: a time with its zone.
    return OffsetClock.starting_at(args.now) if args.now else None


def _stop_on_signal() -> asyncio.Event:
    """Set by SIGTERM or SIGINT: the worker claims nothing more and ends once what it
    claimed is charged (or sent) and recorded. Killed instead, its charges would stop
    mid-call, their claims held until their lease ran out."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def cmd_scheduler(args: argparse.Namespace) -> int:
    """Charge due installments (and, unless --no-webhooks, deliver webhooks)."""
    from payorch.adapters.worker_lock import AnotherWorkerRunning, single_worker
    from payorch.bootstrap import bootstrap
    from payorch.entrypoints.logs import configure
    from payorch.entrypoints.runtime import loop_factory, tune_gc

    if args.once and args.http_port is not None:
        print(
            "payorch scheduler: --http-port is for a running scheduler, not --once", file=sys.stderr
        )
        return 2
    settings = _worker_settings(args)
    clock = _clock(args)
    configure(settings.log_level)
    new_loop = loop_factory(settings.event_loop)  # refused before any lock file is made
    with contextlib.ExitStack() as locks:
        try:
            locks.enter_context(single_worker(settings.database_url, "scheduler"))
        except AnotherWorkerRunning as exc:
            print(f"payorch scheduler: {exc}", file=sys.stderr)
            return 2
        webhooks = not args.no_webhooks
        if webhooks:
            try:
                locks.enter_context(single_worker(settings.database_url, "webhook-dispatcher"))
            except AnotherWorkerRunning as exc:
                print(f"payorch scheduler: not dispatching webhooks: {exc}", file=sys.stderr)
                webhooks = False

        async def main() -> int:
            container = await bootstrap(settings, clock=clock)
            tune_gc(settings.gc_threshold)
            app = container.installments
            try:
                stop = _stop_on_signal()
                if args.once:
                    out: dict[str, Any] = {
                        "now": container.clock.now().isoformat(),
                        "scheduler": (await app.scheduler.run_once(stop)).as_dict(),
                    }
                    if webhooks:
                        out["webhooks"] = (await app.dispatcher.run_once(stop)).as_dict()
                    print(json.dumps(out), flush=True)
                    return 0
                jobs = [
                    asyncio.create_task(
                        app.scheduler.run_forever(settings.scheduler_interval_s, stop)
                    )
                ]
                if webhooks:
                    jobs.append(
                        asyncio.create_task(
                            app.dispatcher.run_forever(settings.webhook_interval_s, stop)
                        )
                    )
                async with _worker_http(args, settings, stop, container.database) as http:
                    print(f"payorch scheduler running as {app.worker_id}{http}", flush=True)
                    await stop.wait()
                    await asyncio.gather(*jobs)
                return 0
            finally:
                await container.close()

        with asyncio.Runner(loop_factory=new_loop) as runner:
            return runner.run(main())


@contextlib.asynccontextmanager
async def _worker_http(
    args: argparse.Namespace, settings: Any, stop: asyncio.Event, database: DatabaseReadiness
) -> AsyncIterator[str]:
    """`--http-port`: the worker's own metrics (the charges, processor calls and
    deliveries it makes are counted in its process, never in a `serve` replica's),
    liveness, and readiness: 503 once told to stop, or while `database` (probed here, as
    `payorch serve` probes its own) judges the database down, since the worker can
    charge and deliver nothing then. Serves while the block runs; where it listens is
    yielded for the start line ("" with no port)."""
    if args.http_port is None:
        yield ""
        return
    from payorch.entrypoints.http.app import build_app, start_http, warn_if_metrics_open

    app = build_app(
        ready=lambda: not stop.is_set(),
        database_up=lambda: database.up,
        metrics_token=settings.metrics_token,
    )
    runner, port = await start_http(app, settings.http_host, settings.http_port)
    warn_if_metrics_open(settings.http_host, settings.metrics_token)
    probe = asyncio.create_task(database.run())
    try:
        yield f", HTTP on {settings.http_host}:{port}"
    finally:
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
        await runner.cleanup()


def cmd_dispatch(args: argparse.Namespace) -> int:
    """Deliver webhooks only."""
    from payorch.adapters.worker_lock import AnotherWorkerRunning, single_worker
    from payorch.bootstrap import bootstrap
    from payorch.entrypoints.logs import configure
    from payorch.entrypoints.runtime import loop_factory, tune_gc

    if args.once and args.http_port is not None:
        print(
            "payorch webhooks dispatch: --http-port is for a running dispatcher, not --once",
            file=sys.stderr,
        )
        return 2
    settings = _worker_settings(args)
    clock = _clock(args)
    configure(settings.log_level)
    new_loop = loop_factory(settings.event_loop)  # refused before any lock file is made

    async def main() -> int:
        # Charges nothing: the processors it is given are not checked.
        container = await bootstrap(settings, clock=clock, charging=False)
        # As the scheduler: a long-running worker, its start-up objects frozen.
        tune_gc(settings.gc_threshold)
        try:
            dispatcher = container.installments.dispatcher
            stop = _stop_on_signal()
            if args.once:
                print(json.dumps((await dispatcher.run_once(stop)).as_dict()), flush=True)
                return 0
            job = asyncio.create_task(dispatcher.run_forever(settings.webhook_interval_s, stop))
            async with _worker_http(args, settings, stop, container.database) as http:
                worker = container.installments.worker_id
                print(f"payorch webhooks dispatch running as {worker}{http}", flush=True)
                await stop.wait()
                await job
            return 0
        finally:
            await container.close()

    try:
        with (
            single_worker(settings.database_url, "webhook-dispatcher"),
            asyncio.Runner(loop_factory=new_loop) as runner,
        ):
            return runner.run(main())
    except AnotherWorkerRunning as exc:
        print(f"payorch webhooks dispatch: {exc}", file=sys.stderr)
        return 2


# -- inside `payorch serve` ----------------------------------------------------------------
def serve_jobs(
    container: Any, settings: Any, locks: contextlib.ExitStack, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    """The scheduler and the dispatcher as background jobs of `payorch serve`, when
    switched on (PAYORCH_SCHEDULER=1, PAYORCH_WEBHOOK_DISPATCHER=1). Once `stop` is set
    they claim nothing more and end when what they claimed is done."""
    import logging

    from payorch.adapters.worker_lock import AnotherWorkerRunning, single_worker

    log = logging.getLogger("payorch.serve")
    app = container.installments
    jobs: list[asyncio.Task[None]] = []
    wanted = [
        (settings.scheduler, "scheduler", app.scheduler, settings.scheduler_interval_s),
        (
            settings.webhook_dispatcher,
            "webhook-dispatcher",
            app.dispatcher,
            settings.webhook_interval_s,
        ),
    ]
    for enabled, kind, worker, interval in wanted:
        if not enabled:
            continue
        try:
            locks.enter_context(single_worker(settings.database_url, kind))
        except AnotherWorkerRunning as exc:
            log.error("not running the %s: %s", kind, exc)
            continue
        jobs.append(asyncio.create_task(worker.run_forever(interval, stop)))
        log.info("running the %s every %.0f s", kind, interval)
    return jobs


# -- a receiver for local tries -------------------------------------------------------------
def cmd_listen(args: argparse.Namespace) -> int:
    """Print verified webhooks, one JSON line each; refuse the rest with 400."""
    from aiohttp import web

    app = receiver(args.secret, fail_first=args.fail_first)
    print(f"listening on http://{args.host}:{args.port}/ (verifying signatures)", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


def receiver(secrets: Sequence[str], *, fail_first: int = 0) -> web.Application:
    """`webhooks listen`'s app: a webhook verified under any of `secrets` (a rotation's
    overlap: the receiver holds the old secret and the new one) is printed."""
    from aiohttp import web

    from payorch.webhooks import WebhookVerificationError, verify

    failures: dict[str, int] = {}

    def verified(headers: Mapping[str, str], body: bytes) -> Any:
        refusal = WebhookVerificationError("no secret to verify with")
        for secret in secrets:
            try:
                return verify(secret, headers, body)
            except WebhookVerificationError as exc:
                refusal = exc
        raise refusal

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = verified(request.headers, body)
        except WebhookVerificationError as exc:
            print(json.dumps({"rejected": str(exc)}), file=sys.stderr, flush=True)
            return web.Response(status=400, text=str(exc))
        webhook_id = request.headers["webhook-id"]
        seen = failures.get(webhook_id, 0)
        if seen < fail_first:
            failures[webhook_id] = seen + 1
            print(
                json.dumps({"answered": 500, "webhook_id": webhook_id, "type": event.get("type")}),
                flush=True,
            )
            return web.Response(status=500, text="failing on purpose (--fail-first)")
        print(
            json.dumps(
                {
                    "verified": True,
                    "webhook_id": webhook_id,
                    "type": event.get("type"),
                    "data": event.get("data"),
                },
                sort_keys=True,
            ),
            flush=True,
        )
        return web.Response(status=204)

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/{tail:.*}", receive)
    return app


# -- wiring into the `payorch` parser ------------------------------------------------------
def _http_port_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--http-port",
        type=int,
        help="serve /metrics, /healthz and /readyz on PAYORCH_HTTP_HOST at this port"
        " (off by default; not with --once)",
    )


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    client_flags: Flags,
    db_flags: Flags,
) -> None:
    inst = sub.add_parser("installments", help="installment plans (InstallmentService)")
    inst_sub = inst.add_subparsers(dest="installments_command", required=True)

    create = inst_sub.add_parser("create", help="charge the first installment, schedule the rest")
    client_flags(create)
    create.add_argument("--merchant", help="merchant id (default: the API key's)")
    create.add_argument("--order-id", required=True, help="the order the plan pays for")
    create.add_argument(
        "--amount",
        required=True,
        type=cli_arguments.amount,
        help="order total: 100.00 or 10000 (minor)",
    )
    create.add_argument(
        "--currency", required=True, type=cli_arguments.currency, help="ISO-4217 code (eur)"
    )
    create.add_argument("--payment-method", required=True, help="saved method, e.g. pm_card_visa")
    create.add_argument(
        "--customer",
        required=True,
        help="processor customer id (cus_...): the first charge saves the card on it, "
        "and the later installments are charged to the card saved there",
    )
    create.add_argument(
        "--request-id",
        help="idempotency key (default: plan-ORDER_ID, so a re-run makes no second plan; "
        "give a new one to try another card after a decline)",
    )
    create.add_argument("--table", action="store_true", help="the plan as a table")
    create.set_defaults(func=cmd_create)

    get = inst_sub.add_parser("get", help="a plan with its schedule")
    client_flags(get)
    get.add_argument("plan_id", help="ip_..., as create and list print it")
    get.add_argument("--table", action="store_true", help="the plan as a table")
    get.set_defaults(func=cmd_get)

    lst = inst_sub.add_parser("list", help="plans, newest first")
    client_flags(lst)
    lst.add_argument(
        "--status",
        choices=["active", "completed", "breach", "cancelled"],
        help="only plans in this status",
    )
    lst.add_argument("--order-id", help="only the plans of this order")
    lst.add_argument("--customer", help="only the plans charged to this customer (cus_...)")
    lst.add_argument("--page-size", type=int, default=20, help="at most 100 (default 20)")
    lst.add_argument("--page-token", help="the nextPageToken of the page before")
    lst.set_defaults(func=cmd_list)

    export = inst_sub.add_parser(
        "export", help="every plan selected, one CSV row per installment (all pages)"
    )
    client_flags(export)
    export.add_argument(
        "--status",
        choices=["active", "completed", "breach", "cancelled"],
        help="only plans in this status",
    )
    export.add_argument("--order-id", help="only the plans of this order")
    export.add_argument("--customer", help="only the plans charged to this customer (cus_...)")
    export.set_defaults(func=cmd_export)

    cancel = inst_sub.add_parser("cancel", help="charge nothing more")
    client_flags(cancel)
    cancel.add_argument("plan_id", help="ip_..., as create and list print it")
    cancel.add_argument("--reason", help="kept with the plan")
    cancel.add_argument("--table", action="store_true", help="the plan as a table")
    cancel.set_defaults(func=cmd_cancel)

    retry = inst_sub.add_parser("retry", help="charge a failed installment now")
    client_flags(retry)
    retry.add_argument("installment_id", help="PLAN_N: the plan id and the installment's number")
    retry.add_argument(
        "--request-id",
        help="idempotency key (default: a new one, printed if the call fails); the same"
        " command run again with it after a lost answer returns that retry, charging nothing",
    )
    retry.add_argument("--table", action="store_true", help="the plan as a table")
    retry.set_defaults(func=cmd_retry)

    sched = sub.add_parser("scheduler", help="charge due installments (and deliver webhooks)")
    db_flags(sched)
    sched.add_argument("--processors", help="as for serve")
    sched.add_argument("--simulate", help="as for serve")
    sched.add_argument("--once", action="store_true", help="one pass, then exit (for cron)")
    sched.add_argument(
        "--now",
        type=cli_arguments.instant,
        help="act as if it were this time, e.g. 2026-03-01T00:00:00Z",
    )
    sched.add_argument(
        "--interval",
        type=float,
        help="seconds between passes (PAYORCH_SCHEDULER_INTERVAL_S, default 60)",
    )
    sched.add_argument(
        "--batch-size",
        type=int,
        help="installments claimed at a time (PAYORCH_SCHEDULER_BATCH_SIZE, default 50)",
    )
    sched.add_argument("--no-webhooks", action="store_true", help="leave webhooks to another")
    _http_port_flag(sched)
    sched.set_defaults(func=cmd_scheduler)

    hooks = sub.add_parser("webhooks", help="webhook endpoints, deliveries, dispatcher, receiver")
    hooks_sub = hooks.add_subparsers(dest="webhooks_command", required=True)

    ep_create = hooks_sub.add_parser("create-endpoint", help="the secret is shown once")
    client_flags(ep_create)
    ep_create.add_argument("--merchant", help="merchant id (default: the API key's)")
    ep_create.add_argument("--url", required=True, help="https:// URL the webhooks are sent to")
    ep_create.add_argument(
        "--request-id",
        help="idempotency key (default: a new one, printed if the call fails); the same"
        " command run again with it after a lost answer returns the same endpoint",
    )
    ep_create.add_argument("--description", help="a note for people")
    ep_create.add_argument(
        "--event-type", action="append", help="e.g. installment.paid (repeatable; default all)"
    )
    ep_create.set_defaults(func=cmd_endpoint_create)

    ep_list = hooks_sub.add_parser(
        "list-endpoints", help="webhook endpoints (ops key: every merchant's); never secrets"
    )
    client_flags(ep_list)
    ep_list.set_defaults(func=cmd_endpoint_list)

    ep_delete = hooks_sub.add_parser(
        "delete-endpoint",
        help="stop sending to an endpoint; its pending deliveries are dead-lettered",
    )
    client_flags(ep_delete)
    ep_delete.add_argument("endpoint_id", help="we_..., as list-endpoints prints it")
    ep_delete.set_defaults(func=cmd_endpoint_delete)

    ep_enable = hooks_sub.add_parser(
        "enable-endpoint", help="send to a disabled endpoint again (dead deliveries stay dead)"
    )
    client_flags(ep_enable)
    ep_enable.add_argument("endpoint_id", help="we_..., as list-endpoints prints it")
    ep_enable.set_defaults(func=cmd_endpoint_enable)

    ep_rotate = hooks_sub.add_parser(
        "rotate-secret",
        help="a new signing secret, shown once; the old one signs beside it for the overlap",
    )
    client_flags(ep_rotate)
    ep_rotate.add_argument("endpoint_id", help="we_..., as list-endpoints prints it")
    ep_rotate.add_argument(
        "--overlap-hours",
        type=cli_arguments.overlap_hours,
        help="how long the old secret signs too, 0 (a leaked one: not at all) to 168; default 24",
    )
    ep_rotate.set_defaults(func=cmd_endpoint_rotate)

    deliveries = hooks_sub.add_parser("deliveries", help="deliveries (--status dead: dead letters)")
    client_flags(deliveries)
    deliveries.add_argument(
        "--status", choices=["pending", "delivered", "dead"], help="only deliveries in this status"
    )
    deliveries.add_argument("--endpoint", help="only this endpoint's (we_...)")
    deliveries.add_argument("--page-size", type=int, default=20, help="at most 100 (default 20)")
    deliveries.add_argument("--page-token", help="the nextPageToken of the page before")
    deliveries.set_defaults(func=cmd_deliveries)

    redeliver = hooks_sub.add_parser(
        "redeliver",
        help="send a dead delivery again; with --endpoint, what an endpoint was not delivered",
    )
    client_flags(redeliver)
    redeliver.add_argument("delivery_id", nargs="?", help="a delivery (whd_...), over gRPC")
    redeliver.add_argument(
        "--endpoint",
        help="on the database: queue a delivery of every event the endpoint was not"
        " delivered (dead-lettered, or missed while disabled), with --since and --until"
        " or --dead",
    )
    db_flags(redeliver)
    redeliver.add_argument(
        "--since",
        type=cli_arguments.instant,
        help="events that occurred from then (with --until; at most 31 days)",
    )
    redeliver.add_argument("--until", type=cli_arguments.instant, help="... up to then, excluded")
    redeliver.add_argument(
        "--dead", action="store_true", help="every dead delivery of the endpoint, any time"
    )
    redeliver.add_argument(
        "--type", action="append", help="only this webhook type, e.g. installment.paid (repeatable)"
    )
    redeliver.add_argument(
        "--dry-run", action="store_true", help="count what would be queued, change nothing"
    )
    redeliver.set_defaults(func=cmd_redeliver, refuse=redeliver.error)

    dispatch = hooks_sub.add_parser("dispatch", help="deliver webhooks (no scheduler)")
    db_flags(dispatch)
    dispatch.add_argument("--once", action="store_true", help="one pass, then exit (for cron)")
    dispatch.add_argument("--now", type=cli_arguments.instant, help="as for scheduler")
    _http_port_flag(dispatch)
    dispatch.set_defaults(func=cmd_dispatch)

    listen = hooks_sub.add_parser("listen", help="a local receiver printing verified webhooks")
    listen.add_argument("--port", type=int, default=8088, help="default 8088")
    listen.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    listen.add_argument(
        "--secret",
        required=True,
        action="append",
        type=cli_arguments.webhook_secret,
        help="the endpoint's whsec_... secret; give it twice (the new and the old) during"
        " a rotation's overlap: a webhook verified under either is taken",
    )
    listen.add_argument(
        "--fail-first", type=int, default=0, help="answer 500 to the first N tries of each webhook"
    )
    listen.set_defaults(func=cmd_listen)
