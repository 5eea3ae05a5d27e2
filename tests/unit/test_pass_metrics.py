"""The scheduler's and the dispatcher's passes, counted in Prometheus: before, what a
pass did was only a log line (and `--once`'s output), so an installment failed for good
(its plan in breach) or a webhook dead-lettered could be neither graphed nor alerted on."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from payorch.adapters.clock import ManualClock
from payorch.adapters.metrics import Metrics
from payorch.adapters.pass_metrics import (
    CHARGE_OUTCOMES,
    DELIVERY_OUTCOMES,
    PrometheusPassCounter,
)
from payorch.app.installment_scheduler import InstallmentScheduler, SchedulerStats
from payorch.app.webhook_delivery import DispatchStats
from payorch.domain.payment import PaymentStatus
from tests.fakes.installments import FakeInstallmentUnitOfWork, FakeWebhooks
from tests.unit.test_installment_charger import LEASE, Setup
from tests.unit.test_webhook_dispatcher import (
    ScriptedSender,
    dispatcher_a,
    due_now,
    due_now_as,
    failing_endpoint,
)

DAY = timedelta(days=1)


class Counted:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counter = PrometheusPassCounter(Metrics(self.registry))

    def charges(self) -> dict[str, float]:
        return self._by_outcome("payorch_scheduler_charges_total", CHARGE_OUTCOMES)

    def deliveries(self) -> dict[str, float]:
        return self._by_outcome("payorch_webhook_deliveries_total", DELIVERY_OUTCOMES)

    def disabled(self) -> float | None:
        return self.registry.get_sample_value("payorch_webhook_endpoints_disabled_total")

    def _by_outcome(self, name: str, outcomes: tuple[str, ...]) -> dict[str, float]:
        values = {o: self.registry.get_sample_value(name, {"outcome": o}) for o in outcomes}
        assert None not in values.values(), "every outcome is exported from the start, at 0"
        return {o: v for o, v in values.items() if v}


def scheduler(s: Setup, counted: Counted) -> InstallmentScheduler:
    return InstallmentScheduler(
        s.uow,
        s.charger,
        s.clock,
        worker_id="w-2",
        lease_s=LEASE.total_seconds(),
        on_pass=counted.counter.scheduler_pass,
    )


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(PaymentStatus.SUCCEEDED, "paid"), (PaymentStatus.FAILED, "failed_final")],
)
async def test_a_scheduler_pass_counts_each_charge_by_what_it_came_to(status, outcome):
    s, counted = Setup(), Counted()
    s.payments.status = status
    s.clock.advance(30 * DAY.total_seconds())  # installment 2 falls due

    stats = await scheduler(s, counted).run_once()

    assert counted.charges() == {outcome: 1}
    # The pass's own stats (--once prints them) say the same: a final failure is a
    # failure, and one of the failures that breached their plan.
    assert (stats.paid, stats.failed, stats.failed_final) == (
        (1, 0, 0) if outcome == "paid" else (0, 1, 1)
    )


async def test_passes_add_up_and_a_pass_with_nothing_due_counts_nothing():
    s, counted = Setup(), Counted()
    sched = scheduler(s, counted)
    await sched.run_once()
    assert counted.charges() == {}

    s.clock.advance(30 * DAY.total_seconds())
    await sched.run_once()
    s.clock.advance(30 * DAY.total_seconds())
    await sched.run_once()

    assert counted.charges() == {"paid": 2}


async def test_a_pass_that_raises_still_counts_the_charges_it_made():
    s, counted = Setup(), Counted()
    s.clock.advance(30 * DAY.total_seconds())
    claims = 0

    def uow() -> FakeInstallmentUnitOfWork:
        """The database goes away after the pass's first claim."""
        u = s.uow()
        claim_due = u.plans.claim_due

        async def claim_then_fail(**kwargs):
            nonlocal claims
            claims += 1
            if claims > 1:
                raise ConnectionError("the database went away")
            return await claim_due(**kwargs)

        u.plans.claim_due = claim_then_fail
        return u

    sched = InstallmentScheduler(
        uow,
        s.charger,
        s.clock,
        worker_id="w-2",
        lease_s=LEASE.total_seconds(),
        on_pass=counted.counter.scheduler_pass,
    )

    with pytest.raises(ConnectionError):
        await sched.run_once()

    assert counted.charges() == {"paid": 1}


def test_the_counter_keeps_final_failures_out_of_the_failures_that_go_on():
    counted = Counted()

    counted.counter.scheduler_pass(
        SchedulerStats(claimed=9, paid=2, failed=3, failed_final=1, unresolved=1, errors=1)
    )
    counted.counter.webhook_pass(DispatchStats(attempted=5, delivered=3, failed=2, dead=4))

    assert counted.charges() == {
        "paid": 2,
        "failed": 2,
        "failed_final": 1,
        "unresolved": 1,
        "error": 1,
    }
    assert counted.deliveries() == {"delivered": 3, "failed": 2, "dead": 4}
    assert counted.disabled() == 0


async def test_a_counter_that_fails_never_stops_a_pass(caplog):
    s = Setup()
    s.clock.advance(30 * DAY.total_seconds())

    def broken(stats: SchedulerStats) -> None:
        raise RuntimeError("registry gone")

    sched = InstallmentScheduler(
        s.uow, s.charger, s.clock, worker_id="w-2", lease_s=LEASE.total_seconds(), on_pass=broken
    )
    stats = await sched.run_once()

    assert stats.paid == 1
    assert "counting a scheduler pass failed" in caplog.text


async def test_a_dispatcher_pass_counts_deliveries_by_what_they_came_to():
    clock, counted = ManualClock(), Counted()
    webhooks = FakeWebhooks(due_now_as(clock, "evt_ok", "evt_retry"))
    sender = ScriptedSender(clock, {"evt_ok": [(200, 0)], "evt_retry": [(500, 0)]})
    dispatcher = dispatcher_a(
        webhooks, sender, clock, concurrency=1, on_pass=counted.counter.webhook_pass
    )

    await dispatcher.run_once()

    assert counted.deliveries() == {"delivered": 1, "failed": 1}
    assert counted.disabled() == 0


async def test_an_endpoint_disabled_counts_the_deliveries_it_dead_letters():
    """An endpoint failing for days is disabled at its next failure: its other pending
    deliveries are dead-lettered with it, and counted dead (before, only the pass's
    own failures were)."""
    clock, counted = ManualClock(), Counted()
    webhooks = FakeWebhooks([], failing_endpoint(clock))
    clock.advance(3 * DAY.total_seconds())
    webhooks.rows.update({d.id: d for d in due_now(clock, 3)})
    sender = ScriptedSender(clock, {"evt_0": [(500, 0)]})
    dispatcher = dispatcher_a(
        webhooks, sender, clock, concurrency=1, on_pass=counted.counter.webhook_pass
    )

    stats = await dispatcher.run_once()

    assert sender.sent == ["evt_0"]
    # evt_0's attempt failed (to be sent again), then all three went with the endpoint.
    assert (stats.failed, stats.dead, stats.disabled) == (1, 3, 1)
    assert counted.deliveries() == {"failed": 1, "dead": 3}
    assert counted.disabled() == 1
