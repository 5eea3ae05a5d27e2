"""Deliveries: the retry schedule, the dead-letter list, and what a receiver is sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from payorch.domain.card_data import contains_card_number
from payorch.domain.webhook_delivery import (
    BACKOFF_S,
    DeliveryStatus,
    EndpointStatus,
    FailingEndpoints,
    InvalidTransition,
    WebhookDelivery,
    WebhookEndpoint,
    backoff,
    event_type,
    webhook_body,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def delivery() -> WebhookDelivery:
    return WebhookDelivery(
        id="whd_1",
        endpoint_id="we_1",
        merchant_id="m_1",
        event_id="evt_1",
        event_type="installment.paid",
        body="{}",
        created_at=T0,
        next_attempt_at=T0,
    )


def endpoint() -> WebhookEndpoint:
    return WebhookEndpoint(
        id="we_1",
        merchant_id="m_1",
        url="https://example.com/hooks",
        secret="whsec_x",
        description="",
        event_types=(),
        created_at=T0,
        updated_at=T0,
    )


def test_an_endpoint_disabled_by_a_410_is_enabled_again_with_its_url_and_secret():
    e = endpoint()
    e.disable("the receiver answered 410 Gone", T0 + timedelta(minutes=1))
    assert not e.wants("installment.paid")

    assert e.enable(T0 + timedelta(hours=1)) is True

    assert (e.status, e.disabled_reason, e.updated_at) == (
        EndpointStatus.ENABLED,
        "",
        T0 + timedelta(hours=1),
    )
    assert (e.url, e.secret) == ("https://example.com/hooks", "whsec_x")
    assert e.wants("installment.paid")


def test_enabling_an_enabled_endpoint_changes_nothing():
    e = endpoint()
    assert e.enable(T0 + timedelta(hours=1)) is False
    assert (e.status, e.updated_at) == (EndpointStatus.ENABLED, T0)


def test_a_deleted_endpoint_is_never_enabled_again():
    e = endpoint()
    e.delete(T0)
    with pytest.raises(InvalidTransition):
        e.enable(T0)
    assert e.status is EndpointStatus.DELETED


def test_the_schedule_is_immediately_5s_5min_30min_2h_5h_10h_24h():
    assert BACKOFF_S == (0, 5, 300, 1800, 7200, 18000, 36000, 86400)


@pytest.mark.parametrize("jitter", [0.0, 0.5, 0.999])
def test_waits_are_jittered_within_twenty_percent(jitter):
    for n, base in enumerate(BACKOFF_S[1:], start=1):
        wait = backoff(n, jitter)
        assert wait is not None
        assert timedelta(seconds=base * 0.8) <= wait <= timedelta(seconds=base * 1.2)
    assert backoff(len(BACKOFF_S), jitter) is None


def test_eight_failed_attempts_put_a_delivery_in_the_dead_letter_list():
    d = delivery()
    now = T0
    for _ in range(len(BACKOFF_S) - 1):
        d.failed(500, "HTTP 500", now, 0.5)
        assert d.status is DeliveryStatus.PENDING and d.next_attempt_at is not None
        now = d.next_attempt_at
    d.failed(500, "HTTP 500", now, 0.5)
    assert (d.status, d.attempts, d.next_attempt_at) == (DeliveryStatus.DEAD, 8, None)


def test_a_redelivery_starts_a_fresh_schedule_and_only_from_a_finished_delivery():
    d = delivery()
    with pytest.raises(InvalidTransition):
        d.redeliver(T0)
    d.gone(410, "gone")
    d.redeliver(T0 + timedelta(hours=1))
    assert (d.status, d.attempts, d.next_attempt_at) == (
        DeliveryStatus.PENDING,
        0,
        T0 + timedelta(hours=1),
    )


@pytest.mark.parametrize("finish", ["dead", "gone", "delivered", "abandoned"])
def test_a_redelivered_delivery_reads_as_not_yet_attempted(finish):
    """Its attempts start again at 0: an error or status of the schedule before would
    read as an answer to the redelivery, which nothing has sent yet."""
    d = delivery()
    if finish == "dead":
        for _ in BACKOFF_S:
            d.failed(503, "HTTP 503", T0, 0.5)
    elif finish == "gone":
        d.gone(410, "410 Gone: endpoint disabled")
    elif finish == "delivered":
        d.succeeded(204, T0)
    else:
        d.abandon("endpoint disabled")
    d.redeliver(T0 + timedelta(hours=1))
    assert (d.status, d.attempts, d.last_status_code, d.last_error, d.delivered_at) == (
        DeliveryStatus.PENDING,
        0,
        0,
        "",
        None,
    )


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("InstallmentPaid", "installment.paid"),
        ("InstallmentFailedFinal", "installment.failed_final"),
        ("PlanBreached", "installment_plan.breached"),
        ("PlanCompleted", "installment_plan.completed"),
        ("PaymentCompleted", "payment.completed"),
        ("StepSucceeded", "payment.step.succeeded"),
    ],
)
def test_outbox_names_become_dotted_webhook_types(name, kind):
    assert event_type(name) == kind


def plan_event_body(name: str, sequence: int, payload: dict[str, object]) -> str:
    """The body of plan ip_x's event (m_1's, evt_1, at T0)."""
    return webhook_body(
        event_id="evt_1",
        name=name,
        aggregate_id="ip_x",
        merchant_id="m_1",
        sequence=sequence,
        occurred_at=T0,
        payload={"plan_id": "ip_x", **payload},
    )


def test_the_body_is_canonical_json_with_type_timestamp_and_data():
    body = plan_event_body("PlanBreached", 4, {"order_id": "o-1", "installment_id": "ip_x_2"})
    assert " " not in body
    parsed = json.loads(body)
    assert parsed["type"] == "installment_plan.breached"
    assert parsed["timestamp"] == T0.isoformat()
    assert parsed["data"]["event_id"] == "evt_1" and parsed["data"]["sequence"] == 4
    assert "payment_id" not in parsed["data"]


@pytest.mark.parametrize(
    "said", ["4242424242424242", "card 4242 4242 4242 4242 declined", "4000-0566-5566-5556"]
)
def test_a_card_number_in_an_events_text_never_leaves_in_a_webhook(said):
    body = plan_event_body("InstallmentFailed", 2, {"message": said, "reason": said, "attempt": 1})
    assert not contains_card_number(body)
    data = json.loads(body)["data"]
    assert data["attempt"] == 1 and data["plan_id"] == "ip_x"


def failing(since: datetime, dead: int) -> WebhookEndpoint:
    e = endpoint()
    e.failing_since, e.dead_since_failing = since, dead
    return e


def test_an_endpoint_is_to_disable_after_three_days_of_failures_with_three_dead():
    rule = FailingEndpoints()
    three_days = T0 + timedelta(days=3)
    assert rule.to_disable(failing(T0, 3), three_days)
    assert not rule.to_disable(failing(T0, 3), three_days - timedelta(seconds=1))
    assert not rule.to_disable(failing(T0, 2), three_days + timedelta(days=30)), "one event"
    assert not rule.to_disable(endpoint(), three_days), "never failed"
    assert "since 2026-01-01T00:00:00+00:00" in rule.reason(failing(T0, 3))
    assert FailingEndpoints(after=timedelta(days=7)).to_disable(failing(T0, 3), three_days) is False


def test_an_endpoint_disabled_for_failing_starts_its_failing_time_again_when_enabled():
    e = failing(T0, 5)
    e.disable(FailingEndpoints.reason(e), T0 + timedelta(days=3))
    assert (e.status, e.disabled_at) == (EndpointStatus.DISABLED, T0 + timedelta(days=3))
    assert not FailingEndpoints().to_disable(e, T0 + timedelta(days=4)), "disabled already"

    assert e.enable(T0 + timedelta(days=5))
    assert (e.disabled_reason, e.disabled_at, e.failing_since, e.dead_since_failing) == (
        "",
        None,
        None,
        0,
    )
