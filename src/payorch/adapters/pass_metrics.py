"""What each pass of the installment scheduler and of the webhook dispatcher did, as
Prometheus counters: the pass stats (`payorch scheduler --once` prints them, a running
worker logs them) added up over the life of the process, so that a breach or a dead
letter can be graphed and alerted on."""

from __future__ import annotations

from payorch.adapters.metrics import Metrics
from payorch.app.installment_scheduler import SchedulerStats
from payorch.app.webhook_delivery import DispatchStats

# payorch_scheduler_charges_total{outcome}: one per charge, each in exactly one.
CHARGE_OUTCOMES = (
    "paid",
    "failed",
    "failed_final",
    "unresolved",
    "postponed",
    "withdrawn",
    "error",
)
# payorch_webhook_deliveries_total{outcome}: delivered and failed are attempts (failed:
# to be sent again); dead is a delivery dead-lettered (attempts used up, 410 Gone, or
# its endpoint deleted or disabled before it was sent).
DELIVERY_OUTCOMES = ("delivered", "failed", "dead")


class PrometheusPassCounter:
    def __init__(self, metrics: Metrics) -> None:
        self._charges = {o: metrics.scheduler_charges.labels(o) for o in CHARGE_OUTCOMES}
        self._deliveries = {o: metrics.webhook_deliveries.labels(o) for o in DELIVERY_OUTCOMES}
        self._disabled = metrics.webhook_endpoints_disabled

    def scheduler_pass(self, stats: SchedulerStats) -> None:
        counts = {
            "paid": stats.paid,
            # The stats' `failed` holds the final failures too; the label keeps them apart.
            "failed": stats.failed - stats.failed_final,
            "failed_final": stats.failed_final,
            "unresolved": stats.unresolved,
            "postponed": stats.postponed,
            "withdrawn": stats.withdrawn,
            "error": stats.errors,
        }
        for outcome, n in counts.items():
            if n:
                self._charges[outcome].inc(n)

    def webhook_pass(self, stats: DispatchStats) -> None:
        counts = {"delivered": stats.delivered, "failed": stats.failed, "dead": stats.dead}
        for outcome, n in counts.items():
            if n:
                self._deliveries[outcome].inc(n)
        if stats.disabled:
            self._disabled.inc(stats.disabled)
