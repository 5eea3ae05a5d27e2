"""`payorch stats|violations|retrospective`: client commands for PaymentAnalytics and
the ContractMonitor service."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any

from payorch.entrypoints import cli_arguments

if TYPE_CHECKING:
    from payments.orchestrator.v1 import analytics_pb2

# The API's messages are imported by the commands that use them: a worker process,
# which builds the same parser, never loads them.

Flags = Callable[[argparse.ArgumentParser], None]


def _cli() -> Any:
    from payorch.entrypoints import cli

    return cli


def _enum(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def _ms(d: Any) -> str:
    return f"{d.ToMilliseconds()} ms"


def format_stats(s: analytics_pb2.PaymentStats) -> str:
    """GetPaymentStats as a table a person reads."""
    from payments.result.v1 import result_pb2

    since = s.since.ToDatetime(tzinfo=UTC).isoformat()
    until = s.until.ToDatetime(tzinfo=UTC).isoformat()
    recovered = (
        f"{s.infrastructure_failure_payment_count} payment(s) hit one,"
        f" {s.recovered_count} recovered ({s.recovery_share:.1%})"
    )
    by_status = ", ".join(
        f"{_enum(result_pb2.PaymentStatus.Name(c.status), 'PAYMENT_STATUS_')} {c.count}"
        for c in s.by_status
    )
    by_outcome = ", ".join(
        f"{_enum(result_pb2.Outcome.Name(c.outcome), 'OUTCOME_')} {c.count}"
        for c in s.failures_by_outcome
    )
    by_code = ", ".join(
        f"{_enum(result_pb2.ErrorCode.Name(c.error_code), 'ERROR_CODE_')} {c.count}"
        for c in s.failures_by_error_code
    )
    rows = [
        ("window", f"{since} .. {until}"),
        ("merchant", s.merchant_id or "all"),
        ("processor", s.processor or "all"),
        ("payments", str(s.payment_count)),
        ("succeeded", f"{s.succeeded_count} ({s.success_rate:.1%})"),
        ("by status", by_status or "-"),
        ("infra failures", recovered),
        ("attempts", f"{s.attempt_count}, {s.delayed_attempt_count} after a delay"),
        ("avg retry delay", _ms(s.average_retry_delay)),
        ("failures by class", by_outcome or "-"),
        ("failures by code", by_code or "-"),
        (
            "orchestration",
            f"p50 {_ms(s.orchestration_p50)}, p95 {_ms(s.orchestration_p95)},"
            f" p99 {_ms(s.orchestration_p99)}",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def cmd_stats(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from payments.orchestrator.v1 import analytics_pb2
    from payments.orchestrator.v1 import analytics_pb2_grpc as analytics_grpc

    request = analytics_pb2.GetPaymentStatsRequest(
        since=args.since,
        until=args.until,
        merchant_id=args.merchant or "",
        processor=args.processor or "",
    )
    response = _cli()._rpc(args, analytics_grpc.PaymentAnalyticsStub, "GetPaymentStats", request)
    if response is None:
        return 1
    print(
        json_format.MessageToJson(response.stats, indent=2)
        if args.json
        else format_stats(response.stats)
    )
    return 0


def cmd_violations(args: argparse.Namespace) -> int:
    from payments.contracts.v1 import monitor_pb2
    from payments.contracts.v1 import monitor_pb2_grpc as monitor_grpc

    severity = f"SEVERITY_{(args.severity or 'unspecified').upper()}"
    request = monitor_pb2.ListContractViolationsRequest(
        contract_id=args.contract or "",
        severity=severity,
        merchant_id=args.merchant or "",
        since=args.since,
        until=args.until,
        page_size=args.page_size,
        page_token=args.page_token or "",
    )
    response = _cli()._rpc(
        args, monitor_grpc.ContractMonitorStub, "ListContractViolations", request
    )
    if response is None:
        return 1
    _cli()._print(response)
    return 0


def cmd_retrospective(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from payments.contracts.v1 import monitor_pb2
    from payments.contracts.v1 import monitor_pb2_grpc as monitor_grpc

    request = monitor_pb2.GenerateRetrospectiveRequest(since=args.since, until=args.until)
    response = _cli()._rpc(args, monitor_grpc.ContractMonitorStub, "GenerateRetrospective", request)
    if response is None:
        return 1
    sys.stdout.write(
        json_format.MessageToJson(response.retrospective, indent=2) + "\n"
        if args.json
        else response.yaml
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], client_flags: Flags) -> None:
    stats = sub.add_parser("stats", help="payment analytics over a window (GetPaymentStats)")
    client_flags(stats)
    stats.add_argument(
        "--since", type=cli_arguments.timestamp, help="ISO time (default: 7 days before --until)"
    )
    stats.add_argument("--until", type=cli_arguments.timestamp, help="ISO time (default: now)")
    stats.add_argument("--merchant", help="ops: one merchant (default: all); merchants: own")
    stats.add_argument("--processor", help="only payments and attempts of this processor")
    stats.add_argument("--json", action="store_true", help="print the stats as JSON")
    stats.set_defaults(func=cmd_stats)

    violations = sub.add_parser("violations", help="contract violations, newest first (ops key)")
    client_flags(violations)
    violations.add_argument("--contract", help="e.g. input/currency")
    violations.add_argument(
        "--severity", choices=["info", "warning", "error", "critical"], help="only this severity"
    )
    violations.add_argument("--merchant", help="only this merchant's")
    violations.add_argument("--since", type=cli_arguments.timestamp, help="ISO time")
    violations.add_argument("--until", type=cli_arguments.timestamp, help="ISO time")
    violations.add_argument("--page-size", type=int, default=50, help="at most 500 (default 50)")
    violations.add_argument("--page-token", help="the nextPageToken of the page before")
    violations.set_defaults(func=cmd_violations)

    retro = sub.add_parser(
        "retrospective", help="violations against merchant complaints, as YAML (ops key)"
    )
    client_flags(retro)
    retro.add_argument(
        "--since", type=cli_arguments.timestamp, help="ISO time (default: 14 days before --until)"
    )
    retro.add_argument("--until", type=cli_arguments.timestamp, help="ISO time (default: now)")
    retro.add_argument("--json", action="store_true", help="the report as JSON instead of YAML")
    retro.set_defaults(func=cmd_retrospective)
