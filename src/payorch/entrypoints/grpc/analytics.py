"""The PaymentAnalytics servicer: map proto <-> app, nothing more."""

from __future__ import annotations

from payments.orchestrator.v1 import analytics_pb2 as pb
from payorch.app.analytics import InvalidStatsQuery, PaymentAnalytics
from payorch.entrypoints.grpc import observability_mappers as m
from payorch.entrypoints.grpc.errors import invalid_argument
from payorch.entrypoints.grpc.handlers import Call


class PaymentAnalyticsServicer:
    def __init__(self, analytics: PaymentAnalytics) -> None:
        self._analytics = analytics

    async def GetPaymentStats(
        self, request: pb.GetPaymentStatsRequest, call: Call
    ) -> pb.GetPaymentStatsResponse:
        problems: list[tuple[str, str]] = []  # every field judged before any is refused
        since, until = (
            m.judged_time(request, "since", problems),
            m.judged_time(request, "until", problems),
        )
        try:
            stats = await self._analytics.stats(
                call.principal,
                since=since,
                until=until,
                merchant_id=request.merchant_id,
                processor=request.processor,
                found=problems,
            )
        except InvalidStatsQuery as exc:
            raise invalid_argument(exc.problems) from exc
        return pb.GetPaymentStatsResponse(stats=m.stats_pb(stats))
