"""The ContractMonitor servicer: map proto <-> app, nothing more."""

from __future__ import annotations

from payments.contracts.v1 import monitor_pb2 as pb
from payorch.app.contract_reports import (
    FOR_OPERATORS,
    ContractReports,
    InvalidReportRequest,
    ViolationFilter,
)
from payorch.entrypoints.grpc import observability_mappers as m
from payorch.entrypoints.grpc.errors import invalid_argument
from payorch.entrypoints.grpc.handlers import Call
from payorch.entrypoints.grpc.paging import copied, fill_page, page_bytes

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class ContractMonitorServicer:
    # Refused to a merchant key before the request is read (handlers.build_handler);
    # ReportMerchantComplaint is a merchant's own.
    OPS_ONLY = dict.fromkeys(
        ("ListContractViolations", "GenerateContractReport", "GenerateRetrospective"),
        FOR_OPERATORS,
    )

    def __init__(self, reports: ContractReports, max_answer_bytes: int = 4 << 20) -> None:
        """`max_answer_bytes`: the server's send limit, which a page of violations
        keeps under."""
        self._reports = reports
        self._page_bytes = page_bytes(max_answer_bytes)

    async def ListContractViolations(
        self, request: pb.ListContractViolationsRequest, call: Call
    ) -> pb.ListContractViolationsResponse:
        problems: list[tuple[str, str]] = []  # every filter judged before any is refused
        if request.page_size < 0:
            problems.append(("page_size", "must not be negative"))
        size = min(max(request.page_size, 0) or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        severity = m.SEVERITY_FROM_PROTO.get(request.severity)
        if request.severity and severity is None:
            problems.append(("severity", "unknown severity"))
        cursor = None
        try:
            cursor = m.decode_violation_token(request.page_token)
        except m.InvalidField as exc:
            problems.append((exc.field, str(exc)))
        f = ViolationFilter(
            contract_id=request.contract_id,
            severity=severity,
            merchant_id=request.merchant_id,
            since=m.judged_time(request, "since", problems),
            until=m.judged_time(request, "until", problems),
        )
        try:
            found = await self._reports.list_violations(
                call.principal, f, limit=size + 1, after=cursor, found=problems
            )
        except InvalidReportRequest as exc:
            raise invalid_argument(exc.problems) from exc
        response = pb.ListContractViolationsResponse()
        response.next_page_token = fill_page(
            response.violations,
            found,
            size,
            copied(m.violation_pb),
            self._page_bytes,
            m.encode_violation_token,
        )
        return response

    async def GenerateContractReport(
        self, request: pb.GenerateContractReportRequest, call: Call
    ) -> pb.GenerateContractReportResponse:
        problems: list[tuple[str, str]] = []
        since, until = (
            m.judged_time(request, "since", problems),
            m.judged_time(request, "until", problems),
        )
        try:
            report = await self._reports.report(
                call.principal,
                since=since,
                until=until,
                merchant_id=request.merchant_id,
                found=problems,
            )
        except InvalidReportRequest as exc:
            raise invalid_argument(exc.problems) from exc
        return m.report_pb(report)

    async def ReportMerchantComplaint(
        self, request: pb.ReportMerchantComplaintRequest, call: Call
    ) -> pb.ReportMerchantComplaintResponse:
        problems: list[tuple[str, str]] = []
        occurred_at = m.judged_time(request, "occurred_at", problems)
        try:
            complaint = await self._reports.report_complaint(
                call.principal,
                merchant_id=request.merchant_id,
                contract_id=request.contract_id[:64],
                category=request.category[:64],
                text=request.text,
                occurred_at=occurred_at,
                found=problems,
            )
        except InvalidReportRequest as exc:
            raise invalid_argument(exc.problems) from exc
        return pb.ReportMerchantComplaintResponse(complaint=m.complaint_pb(complaint))

    async def GenerateRetrospective(
        self, request: pb.GenerateRetrospectiveRequest, call: Call
    ) -> pb.GenerateRetrospectiveResponse:
        problems: list[tuple[str, str]] = []
        since, until = (
            m.judged_time(request, "since", problems),
            m.judged_time(request, "until", problems),
        )
        if problems:
            raise invalid_argument(problems)
        try:
            report = await self._reports.retrospective(call.principal, since=since, until=until)
        except InvalidReportRequest as exc:
            raise invalid_argument(exc.problems) from exc
        return pb.GenerateRetrospectiveResponse(
            retrospective=m.retrospective_pb(report), yaml=report.to_yaml()
        )
