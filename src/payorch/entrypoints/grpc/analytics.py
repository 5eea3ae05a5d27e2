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
        try:
            since = m.optional_time(request, "since")
            until = m.optional_time(request, "until")
            stats = await self._analytics.stats(
                call.principal,
                since=since,
                until=until,
                merchant_id=request.merchant_id,
                processor=request.processor,
            )
        except m.InvalidField as exc:
            raise invalid_argument([(exc.field, str(exc))]) from exc
        except InvalidStatsQuery as exc:
            raise invalid_argument(exc.problems) from exc
        return pb.GetPaymentStatsResponse(stats=m.stats_pb(stats))
