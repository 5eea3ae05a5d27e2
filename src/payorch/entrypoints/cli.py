"""The `payorch` command: serve, migrate, keys, and a client for the gRPC API."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from payorch.domain.money import InvalidAmount
from payorch.entrypoints import (
    cli_arguments,
    installments_cli,
    observability_cli,
    secrets_cli,
    simulate_cli,
)
from payorch.settings import InvalidSettings, Settings

if TYPE_CHECKING:
    import grpc

    from payments.orchestrator.v1 import health_pb2 as hpb
    from payments.orchestrator.v1 import orchestrator_pb2 as orch

# gRPC and the API's messages are imported by the client commands that use them: a
# worker (`payorch scheduler`, `payorch dispatch`) never loads them (~0.1 s a start).

DEMO_KEY_FILE = ".payorch/demo-key"


# -- server side ----------------------------------------------------------------
def _server_settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        listen=getattr(args, "listen", None),
        database_url=getattr(args, "database_url", None),
        http_port=getattr(args, "http_port", None),
        simulate=getattr(args, "simulate", None),
        processors=getattr(args, "processors", None),
        demo_key_file=getattr(args, "demo_key_file", None),
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from payorch.entrypoints.serve import run

    settings = _server_settings(args)
    if args.simulate_for:
        per = dict(settings.simulate_by_processor)
        for item in args.simulate_for:
            name, _, spec = item.partition("=")  # checked by its argument type
            per[name.strip()] = spec
        settings = Settings(**{**settings.__dict__, "simulate_by_processor": per})
    from payorch.entrypoints.runtime import loop_factory

    with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
        runner.run(run(settings))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from payorch.adapters.persistence.engine import migrate_sync, redacted

    settings = _server_settings(args)
    migrate_sync(settings.database_url)
    print(f"migrated {redacted(settings.database_url)}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete webhook deliveries over (delivered or dead) for longer than the retention."""
    from payorch.adapters.persistence.engine import create_engine, migrate
    from payorch.adapters.persistence.retention import (
        MIN_RETENTION_DAYS,
        prune_webhook_deliveries,
    )

    if args.older_than_days < MIN_RETENTION_DAYS:
        print(
            f"payorch prune: --older-than-days must be at least {MIN_RETENTION_DAYS}: a dead"
            " delivery stays on the dead-letter list, to be redelivered, that long",
            file=sys.stderr,
        )
        return 2
    from payorch.installments_wiring import clock_from_settings

    settings = _server_settings(args)
    # The clock serve and the scheduler stamp deliveries with (PAYORCH_CLOCK_OFFSET).
    now = clock_from_settings(settings).now()
    before = now.replace(microsecond=0) - timedelta(days=args.older_than_days)

    async def main() -> int:
        engine = create_engine(settings.database_url)
        try:
            await migrate(engine)
            count = await prune_webhook_deliveries(engine, before=before, dry_run=args.dry_run)
        finally:
            await engine.dispose()
        done = "would delete" if args.dry_run else "deleted"
        print(f"{done} {count} webhook deliveries delivered or dead before {before.isoformat()}")
        return 0

    return asyncio.run(main())


def cmd_keys(args: argparse.Namespace) -> int:
    from payorch.adapters.clock import SystemClock
    from payorch.adapters.persistence.api_keys import SqlAlchemyApiKeyStore
    from payorch.adapters.persistence.engine import create_engine, migrate
    from payorch.app.auth import Scope

    settings = _server_settings(args)
    if args.keys_command == "create" and bool(args.merchant) == (args.scope == "ops"):
        # Refused as argparse refuses a missing argument, before the database is made.
        both = bool(args.merchant)
        args.refuse(
            "give --merchant M or --scope ops, not both: an ops key acts for every merchant"
            if both
            else "give --merchant M or --scope ops"
        )

    async def main() -> int:
        engine = create_engine(settings.database_url)
        try:
            await migrate(engine)
            store = SqlAlchemyApiKeyStore(engine)
            now = SystemClock().now()
            if args.keys_command == "create":
                scope = Scope.OPS if args.scope == "ops" else Scope.MERCHANT
                key = await store.create(
                    merchant_id=args.merchant or None, scope=scope, label=args.label, now=now
                )
                # "id" as `keys list` names it; "key_id" kept for scripts that read it.
                print(
                    json.dumps({"id": key.key_id, "key_id": key.key_id, "api_key": key.plaintext})
                )
                print(
                    "store the key now: it is shown once and kept only as a hash", file=sys.stderr
                )
            elif args.keys_command == "revoke":
                if not await store.revoke(args.key_id, now=now):
                    shown = cli_arguments.shown_key_id(args.key_id)
                    print(f"no active key {shown}", file=sys.stderr)
                    return 1
                print(json.dumps({"revoked": args.key_id}))
            else:
                for row in await store.list():
                    print(json.dumps(row, default=_iso))
            return 0
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _iso(value: object) -> str:
    """A time as ISO 8601, as every other command prints one (str() drops the `T`)."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


# -- client side ----------------------------------------------------------------
def _api_key(args: argparse.Namespace) -> str:
    if args.api_key:
        return str(args.api_key)  # checked by its argument type
    env = os.environ.get("PAYORCH_API_KEY", "")
    if env:
        return _sendable(env, "PAYORCH_API_KEY")
    demo = Path(os.environ.get("PAYORCH_DEMO_KEY_FILE", DEMO_KEY_FILE))
    return _sendable(demo.read_text().strip(), str(demo)) if demo.exists() else ""


def _sendable(key: str, source: str) -> str:
    if not cli_arguments.is_sendable_key(key):
        raise InvalidSettings(f"{source}: {cli_arguments.API_KEY_RULE}")
    return key


def channel(args: argparse.Namespace) -> grpc.Channel:
    import grpc

    address = args.address or os.environ.get("PAYORCH_ADDRESS", "127.0.0.1:50051")
    if args.tls_ca is not None:  # the files' bytes, read and paired when parsed
        creds = grpc.ssl_channel_credentials(
            root_certificates=args.tls_ca,
            private_key=args.tls_key,
            certificate_chain=args.tls_cert,
        )
        return grpc.secure_channel(address, creds)
    return grpc.insecure_channel(address)


def _metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    key = _api_key(args)
    return [("authorization", f"Bearer {key}")] if key else []


def _print(message: Any) -> None:
    from google.protobuf import json_format

    print(json_format.MessageToJson(message, indent=2))


def parse_split(text: str, default_token: str) -> list[orch.PaymentMethodInput]:
    """`apple_pay:6000,card` or `apple_pay=pm_x:60.00,card=pm_card_visa`."""
    from payments.orchestrator.v1 import orchestrator_pb2 as orch

    methods = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        head, _, amount = part.partition(":")
        method, _, token = head.partition("=")
        item = orch.PaymentMethodInput(
            method=method.strip(), token=(token or default_token).strip()
        )
        if amount:
            if "." in amount:
                item.amount_decimal = amount.strip()
            else:
                item.amount_minor = int(amount)
        methods.append(item)
    return methods


def new_request_id() -> str:
    """A fresh idempotency key. The card-number scan reads a UUID's 8- and 12-digit
    groups as an identifier, so no UUID is ever refused as card data."""
    return f"cli-{uuid.uuid4()}"


def build_pay_request(args: argparse.Namespace) -> orch.CreatePaymentRequest:
    from payments.orchestrator.v1 import orchestrator_pb2 as orch

    req = orch.CreatePaymentRequest(
        merchant_id=args.merchant or "",
        request_id=args.request_id or new_request_id(),
        currency=args.currency,
        customer_id=args.customer or "",
        off_session=args.off_session,
        authorize_only=getattr(args, "authorize_only", False),
    )
    if "." in args.amount:
        req.amount_decimal = args.amount
    else:
        req.amount_minor = int(args.amount)
    if args.split:
        req.methods.extend(parse_split(args.split, args.payment_method or "pm_card_visa"))
    else:
        req.payment_method = args.payment_method or ""
        req.method = args.method or ""
    for item in args.metadata or []:
        key, _, value = item.partition("=")
        req.metadata[key] = value
    return req


# What the CLI says when it sent no key and the server asked for one: the server's own
# message tells a gRPC client which header to send, not a CLI user what to do.
NO_API_KEY = (
    "no API key was sent: pass --api-key or set PAYORCH_API_KEY (`make run` writes its"
    f" demo key to {DEMO_KEY_FILE}, read from there when run in the same directory;"
    " PAYORCH_DEMO_KEY_FILE names another file)"
)


def print_failure(
    exc: grpc.RpcError, made_up_request_id: str = "", *, metadata: list[tuple[str, str]]
) -> None:
    """The status as JSON on stderr, with the request id the command made up if it made
    one: a call whose answer was lost (UNAVAILABLE, DEADLINE_EXCEEDED) is made again
    with `--request-id` set to it, and is then the same call, never a second one.
    `metadata`: what the call sent; with no key, UNAUTHENTICATED says how to give one."""
    import grpc

    message = exc.details()
    if exc.code() is grpc.StatusCode.UNAUTHENTICATED and not metadata:
        message = NO_API_KEY
    failure = {"code": exc.code().name, "message": message}
    if made_up_request_id:
        failure["request_id"] = made_up_request_id
    print(json.dumps(failure, indent=2), file=sys.stderr)


def _call(args: argparse.Namespace, method: str, request: Any, made_up_request_id: str = "") -> int:
    import grpc

    from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc

    metadata = _metadata(args)  # a key it cannot send is refused before any connection
    with channel(args) as ch:
        stub = orch_grpc.PaymentOrchestratorStub(ch)  # type: ignore[no-untyped-call]
        try:
            response = getattr(stub, method)(request, metadata=metadata, timeout=args.timeout)
        except grpc.RpcError as exc:
            print_failure(exc, made_up_request_id, metadata=metadata)
            return 1
    _print(response)
    return 0


def cmd_pay(args: argparse.Namespace) -> int:
    request = build_pay_request(args)
    made_up = "" if args.request_id else request.request_id
    return _call(args, "CreatePayment", request, made_up)


def cmd_get(args: argparse.Namespace) -> int:
    from payments.orchestrator.v1 import orchestrator_pb2 as orch

    return _call(args, "GetPayment", orch.GetPaymentRequest(payment_id=args.payment_id))


def cmd_list(args: argparse.Namespace) -> int:
    from payments.orchestrator.v1 import orchestrator_pb2 as orch

    return _call(
        args,
        "ListPayments",
        orch.ListPaymentsRequest(page_size=args.page_size, page_token=args.page_token or ""),
    )


def cmd_payment_op(args: argparse.Namespace) -> int:
    """confirm / capture / cancel / refund / events on one payment."""
    from payments.orchestrator.v1 import orchestrator_pb2 as orch

    pid = args.payment_id
    requests: dict[str, tuple[str, Any]] = {
        "confirm": ("ConfirmPayment", orch.ConfirmPaymentRequest(payment_id=pid)),
        "capture": ("CapturePayment", orch.CapturePaymentRequest(payment_id=pid)),
        "cancel": (
            "CancelPayment",
            orch.CancelPaymentRequest(payment_id=pid, reason=getattr(args, "reason", "") or ""),
        ),
        "events": ("ListPaymentEvents", orch.ListPaymentEventsRequest(payment_id=pid)),
    }
    if args.command == "refund":
        request = orch.RefundPaymentRequest(
            payment_id=pid,
            request_id=args.request_id or f"cli-refund-{uuid.uuid4()}",
            amount_minor=args.amount or 0,  # 0: all refundable; --amount is never 0
        )
        made_up = "" if args.request_id else request.request_id
        return _call(args, "RefundPayment", request, made_up)
    method, request = requests[args.command]
    return _call(args, method, request)


def cmd_config(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from payments.config.v1 import config_pb2
    from payments.orchestrator.v1 import orchestrator_pb2 as orch

    if args.config_command == "get":
        return _call(
            args,
            "GetMerchantConfig",
            orch.GetMerchantConfigRequest(merchant_id=args.merchant or ""),
        )
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    if _is_config_get_answer(text):
        # `config get > c.json`, edited, then `config set c.json`: the first thing tried.
        raise json_format.ParseError(
            f"{args.file} holds what `payorch config get` prints: send the MerchantConfig"
            ' under its "config" (e.g. `jq .config`)'
        )
    config = json_format.Parse(text, config_pb2.MerchantConfig())
    request = orch.UpsertMerchantConfigRequest(config=config)
    if args.expected_version == 0:  # none stored yet: the defaults apply
        request.expect_default = True
    elif args.expected_version is not None:
        request.expected_version = args.expected_version
    return _call(args, "UpsertMerchantConfig", request)


def _is_config_get_answer(text: str) -> bool:
    """GetMerchantConfigResponse's JSON: a MerchantConfig has no field "config"."""
    try:
        found = json.loads(text)
    except ValueError:
        return False  # json_format says what is wrong with it
    return isinstance(found, dict) and "config" in found


def cmd_reconcile(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from payorch.app.payments import STALE_PROCESSING
    from payorch.app.router import RUN_LIMIT_S
    from payorch.bootstrap import bootstrap

    # NaN is refused too: it compares false.
    if not args.processing_stale_after >= 2 * RUN_LIMIT_S:
        print(
            "payorch reconcile: --processing-stale-after must be at least"
            f" {2 * RUN_LIMIT_S:g} s (default {STALE_PROCESSING.total_seconds():g}): a live"
            f" server runs one payment for up to {RUN_LIMIT_S:g} s, and a payment younger"
            " than that may still be its",
            file=sys.stderr,
        )
        return 2
    settings = _server_settings(args)

    async def main() -> int:
        container = await bootstrap(settings)
        try:
            stats = await container.payments.reconcile_pass(
                processing_stale_after=timedelta(seconds=args.processing_stale_after),
                limit=args.limit,
            )
        finally:
            await container.close()
        print(json.dumps({"reconciled": stats.settled, "errors": stats.errors}))
        return 0

    return asyncio.run(main())


def _rpc(args: argparse.Namespace, stub_class: Any, method: str, request: Any) -> Any | None:
    """Call one RPC; on an error print it (code and message) and return None."""
    import grpc

    metadata = _metadata(args)  # a key it cannot send is refused before any connection
    with channel(args) as ch:
        stub = stub_class(ch)
        try:
            return getattr(stub, method)(request, metadata=metadata, timeout=args.timeout)
        except grpc.RpcError as exc:
            print_failure(exc, metadata=metadata)
            return None


def _ms(d: Any) -> str:
    return str(round(d.ToMilliseconds()))


def format_health_table(response: hpb.ListProcessorHealthResponse) -> str:
    """ListProcessorHealth as a table a person reads."""
    from payments.orchestrator.v1 import health_pb2 as hpb

    head = ("PROCESSOR", "STATE", "SINCE", "BREAKER", "CALLS", "SUCCESS", "INFRA_FAIL",
            "DECLINE", "RETRIES", "AVG_MS", "P95_MS", "REASON")  # fmt: skip
    rows = [head]
    for r in response.reports:
        s = r.stats
        rows.append(
            (
                r.processor,
                hpb.HealthState.Name(r.state).removeprefix("HEALTH_STATE_").lower(),
                r.state_since.ToDatetime().strftime("%H:%M:%S"),
                hpb.BreakerState.Name(r.breaker_state).removeprefix("BREAKER_STATE_").lower(),
                str(s.request_count),
                f"{s.success_rate:.0%}",
                f"{s.infrastructure_failure_rate:.0%}",
                f"{s.decline_rate:.0%}",
                f"{s.retry_count}/{s.retry_count + s.retry_budget_remaining}",
                _ms(s.average_latency),
                _ms(s.p95_latency),
                r.reason,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]
    window = response.reports[0].stats.window.seconds if response.reports else 0
    serving = "serving" if response.serving else "NOT SERVING: every breaker is open"
    lines.append(f"replica {response.replica}, window {window} s, {serving}")
    return "\n".join(line.rstrip() for line in lines)


def cmd_health(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from payments.orchestrator.v1 import health_pb2 as hpb
    from payments.orchestrator.v1 import health_pb2_grpc as hpb_grpc

    response = _rpc(
        args, hpb_grpc.ProcessorHealthStub, "ListProcessorHealth", hpb.ListProcessorHealthRequest()
    )
    if response is None:
        return 1
    print(
        json_format.MessageToJson(response, indent=2)
        if args.json
        else format_health_table(response)
    )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from payments.orchestrator.v1 import health_pb2 as hpb
    from payments.orchestrator.v1 import health_pb2_grpc as hpb_grpc

    request = hpb.SetSimulatedFaultsRequest(processor=args.processor, faults=args.faults)
    response = _rpc(args, hpb_grpc.ProcessorFaultInjectionStub, "SetSimulatedFaults", request)
    if response is None:
        return 1
    _print(response)
    return 0


def _client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="server address (PAYORCH_ADDRESS, default 127.0.0.1:50051)")
    p.add_argument(
        "--api-key",
        type=cli_arguments.api_key,
        help="API key (PAYORCH_API_KEY; else the local demo key)",
    )
    p.add_argument(
        "--timeout",
        type=cli_arguments.timeout,
        default=30.0,
        help="deadline in seconds (above 0, at most 86400; default 30)",
    )
    p.add_argument(
        "--tls-ca",
        type=cli_arguments.pem_file,
        help="CA certificate to verify the server (enables TLS)",
    )
    p.add_argument(
        "--tls-cert", type=cli_arguments.pem_file, help="client certificate (mTLS; with --tls-key)"
    )
    p.add_argument(
        "--tls-key", type=cli_arguments.pem_file, help="client private key (mTLS; with --tls-cert)"
    )
    p.set_defaults(refuse_client=p.error)


def _db_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", help="PAYORCH_DATABASE_URL (default sqlite:///payorch.db)")


def parser() -> argparse.ArgumentParser:
    # Its subcommands are parsers of its own class: each refuses bad input in one line.
    root: argparse.ArgumentParser = cli_arguments.Parser(prog="payorch", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--listen", help="PAYORCH_LISTEN (default 127.0.0.1:50051)")
    _db_flags(serve)
    serve.add_argument("--http-port", type=int, help="PAYORCH_HTTP_PORT (default 9464)")
    serve.add_argument("--processors", help="simulated processors, e.g. sim_a,sim_b")
    serve.add_argument("--simulate", help='faults for simulated processors, e.g. "api_error=0.3"')
    serve.add_argument(
        "--simulate-for",
        action="append",
        type=cli_arguments.simulate_for,
        metavar="NAME=SPEC",
        help='faults for one processor, e.g. sim_a="api_error=1.0" (repeatable)',
    )
    serve.add_argument("--demo-key-file", help="create/reuse a demo key for m_demo in this file")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    _db_flags(migrate)
    migrate.set_defaults(func=cmd_migrate)

    prune = sub.add_parser(
        "prune",
        help="delete webhook deliveries delivered or dead longer ago than a number of days",
    )
    _db_flags(prune)
    prune.add_argument(
        "--older-than-days",
        type=int,
        required=True,
        metavar="N",
        help="keep what was delivered, or dead-lettered, within the last N days (at least 7)",
    )
    prune.add_argument("--dry-run", action="store_true", help="count them, delete nothing")
    prune.set_defaults(func=cmd_prune)

    keys = sub.add_parser("keys", help="create, revoke and list API keys (database direct)")
    _db_flags(keys)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser(
        "create", help="a new key for a merchant, or an ops key (shown once)"
    )
    create.add_argument(
        "--merchant", type=cli_arguments.merchant, help="bind the key to this merchant"
    )
    create.add_argument(
        "--scope",
        choices=["merchant", "ops"],
        default="merchant",
        help="ops: an operator's key, for every merchant (default: merchant, with --merchant)",
    )
    create.add_argument(
        "--label", type=cli_arguments.key_label, default="", help="what the key is for"
    )
    create.set_defaults(refuse=create.error)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", type=cli_arguments.key_id, help="the id `keys list` prints")
    keys_sub.add_parser("list", help="every key: id, merchant, scope, label, times (never the key)")
    keys.set_defaults(func=cmd_keys)

    pay = sub.add_parser("pay", help="take a payment")
    _client_flags(pay)
    pay.add_argument("--merchant", help="merchant id (default: the API key's)")
    pay.add_argument(
        "--amount",
        required=True,
        type=cli_arguments.amount,
        help="minor units (1999) or decimal (19.99)",
    )
    pay.add_argument("--currency", required=True, help="ISO-4217 code, any case (usd)")
    pay.add_argument("--payment-method", help="token, e.g. pm_card_visa")
    pay.add_argument("--method", help="card, apple_pay, google_pay")
    pay.add_argument(
        "--split",
        type=cli_arguments.split,
        help="apple_pay:6000,card (METHOD[=TOKEN][:AMOUNT],...)",
    )
    pay.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    pay.add_argument("--customer", help="processor customer id")
    pay.add_argument(
        "--off-session",
        action="store_true",
        help="the customer is not there: a card saved on --customer",
    )
    pay.add_argument(
        "--metadata",
        action="append",
        type=cli_arguments.metadata_pair,
        metavar="KEY=VALUE",
        help="stored with the payment and set on the processor's (repeatable)",
    )
    pay.add_argument("--authorize-only", action="store_true", help="capture later")
    pay.set_defaults(func=cmd_pay)

    get = sub.add_parser("get", help="show a payment with its attempts")
    _client_flags(get)
    get.add_argument("payment_id", help="pay_..., as pay prints it")
    get.set_defaults(func=cmd_get)

    lst = sub.add_parser("list", help="list payments, newest first")
    _client_flags(lst)
    lst.add_argument("--page-size", type=int, default=20, help="at most 100 (default 20)")
    lst.add_argument("--page-token", help="the nextPageToken of the page before")
    lst.set_defaults(func=cmd_list)

    for name, help_text in (
        ("confirm", "resume a payment after the customer acted (3-D Secure)"),
        ("capture", "capture an authorize-only payment"),
        ("cancel", "void the authorizations of a payment not yet captured"),
        ("refund", "refund captured money, in full or in part"),
        ("events", "list a payment's domain events"),
    ):
        op = sub.add_parser(name, help=help_text)
        _client_flags(op)
        op.add_argument("payment_id", help="pay_..., as pay prints it")
        if name == "refund":
            op.add_argument(
                "--amount",
                type=cli_arguments.refund_amount,
                help="minor units (default: all refundable)",
            )
            op.add_argument("--request-id", help="idempotency key of this refund")
        if name == "cancel":
            op.add_argument("--reason", default="", help="recorded in its PaymentCancelled event")
        op.set_defaults(func=cmd_payment_op)

    config = sub.add_parser("config", help="read or replace a merchant's config")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    config_get = config_sub.add_parser(
        "get", help="a merchant's config as protobuf JSON (is_default: none is stored)"
    )
    _client_flags(config_get)
    config_get.add_argument("--merchant", help="ops only: the merchant to read")
    config_set = config_sub.add_parser("set", help="MerchantConfig as protobuf JSON")
    _client_flags(config_set)
    config_set.add_argument("file", help="JSON file, or - for standard input")
    config_set.add_argument(
        "--expected-version",
        type=int,
        help="write only if the stored version is this one (0: only if none is stored)",
    )
    config.set_defaults(func=cmd_config)

    health = sub.add_parser("health", help="processor health on one replica (ops key)")
    _client_flags(health)
    health.add_argument("--json", action="store_true", help="print the response as JSON")
    health.set_defaults(func=cmd_health)

    simulate = sub.add_parser(
        "simulate", help="change a simulated processor's faults at run time (ops key)"
    )
    _client_flags(simulate)
    simulate.add_argument("processor", help="a simulated processor, e.g. sim_a")
    simulate.add_argument("faults", help='fault spec, e.g. "api_error=1.0"; "" for none')
    simulate.set_defaults(func=cmd_simulate)

    rec = sub.add_parser("reconcile", help="resolve payments left UNKNOWN or PROCESSING")
    _db_flags(rec)
    rec.add_argument("--processors", help="as for serve")
    rec.add_argument(
        "--processing-stale-after",
        type=float,
        default=300.0,
        help="seconds after which a PROCESSING payment counts as interrupted (at least"
        " 240: a live server runs one payment for up to 120)",
    )
    rec.add_argument(
        "--limit", type=int, default=500, help="payments looked at in this run (default 500)"
    )
    rec.set_defaults(func=cmd_reconcile)
    installments_cli.register(sub, _client_flags, _db_flags)
    observability_cli.register(sub, _client_flags)
    secrets_cli.register(sub, _db_flags)
    simulate_cli.register(sub)
    return root


def _refusals() -> tuple[type[Exception], ...]:
    """What a command refuses with one line: a file it cannot read or parse, an
    amount the currency cannot hold, a database URL it cannot use. Imported only
    when something is raised, so a client command never loads SQLAlchemy."""
    from google.protobuf import json_format

    from payorch.adapters.persistence.engine import UnsupportedDatabase

    return (OSError, json_format.ParseError, InvalidAmount, UnsupportedDatabase, InvalidSettings)


# The exit status of a writer whose reader left, as a shell reports one SIGPIPE ended.
BROKEN_PIPE_EXIT = 128 + signal.SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cli_arguments.check_client_tls(args)
    try:
        result: int = args.func(args)
        sys.stdout.flush()  # a reader gone shows here, not in a warning at exit
    except BrokenPipeError:
        # `payorch list | head`: the reader has what it wanted. No message; stdout goes
        # to devnull so the interpreter's last flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE_EXIT
    except _refusals() as exc:
        # One line, as the README says: protobuf's parse errors run over two.
        print("payorch: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
