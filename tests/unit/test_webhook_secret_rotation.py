"""Signing-secret rotation on the in-memory fakes, with a manual clock: during the
overlap every attempt is signed with the new secret and the old one (new first), after
it with the new one alone; at most two sign; only the endpoint's merchant (or ops) may
rotate it. On SQLite and PostgreSQL, through gRPC: tests/integration/test_installment_rpc.py;
with the reference library over HTTP: tests/integration/test_webhook_interop.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from payorch.adapters.clock import ManualClock
from payorch.app.installment_ports import SendResult
from payorch.app.webhook_delivery import (
    EndpointNotFound,
    InvalidEndpoint,
    WebhookDispatcher,
    WebhookEndpoints,
)
from payorch.domain.webhook_delivery import (
    MAX_SECRET_OVERLAP,
    EndpointStatus,
    WebhookEndpoint,
)
from payorch.webhooks import (
    WebhookVerificationError,
    generate_secret,
    headers_for,
    sign,
    verify,
)
from tests.fakes.installments import FakeInstallmentUnitOfWork, FakeWebhooks
from tests.unit.test_webhook_dispatcher import due_now_as

START = datetime(2027, 1, 4, tzinfo=UTC)
HOUR = timedelta(hours=1)
OLD = generate_secret()


class SigningSender:
    """Signs each request as the HTTP sender does and keeps its headers."""

    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, str], str]] = []

    async def check_url(self, url: str) -> None:
        return None

    async def send(self, url, *, secrets, webhook_id, timestamp, body, timeout_s) -> SendResult:
        self.sent.append((headers_for(secrets, webhook_id, timestamp, body), body))
        return SendResult(200)


class Rig:
    def __init__(self) -> None:
        self.clock = ManualClock(START)
        self.webhooks = FakeWebhooks([])
        self.webhooks.endpoints["we_1"] = WebhookEndpoint(
            id="we_1",
            merchant_id="m_1",
            url="https://example.com/hook",
            secret=OLD,
            description="",
            event_types=(),
            created_at=START,
            updated_at=START,
        )
        self.new_secrets: list[str] = []
        self.sender = SigningSender()
        self.endpoints = WebhookEndpoints(self.uow, self.sender, self.clock, new_secret=self._new)
        self.dispatcher = WebhookDispatcher(
            self.uow, self.sender, self.clock, wall_clock=self.clock, worker_id="A"
        )
        self.events = 0

    def _new(self) -> str:
        self.new_secrets.append(generate_secret())
        return self.new_secrets[-1]

    def uow(self) -> FakeInstallmentUnitOfWork:
        return FakeInstallmentUnitOfWork(webhooks=self.webhooks)

    async def deliver_one(self) -> tuple[dict[str, str], str]:
        """A delivery due now to we_1, sent: its headers and body."""
        self.events += 1
        (delivery,) = due_now_as(self.clock, f"evt_{self.events}")
        self.webhooks.rows[delivery.id] = delivery
        assert (await self.dispatcher.run_once()).delivered == 1
        return self.sender.sent[-1]

    async def signed_by(self) -> list[str]:
        """Which secrets the next attempt is signed with, in the header's order."""
        headers, body = await self.deliver_one()
        stamp = int(headers["webhook-timestamp"])
        signatures = headers["webhook-signature"].split(" ")
        known = [OLD, *self.new_secrets]
        names = {sign(s, headers["webhook-id"], stamp, body): f"s{known.index(s)}" for s in known}
        return [names.get(s, "?") for s in signatures]


async def test_during_the_overlap_each_attempt_is_signed_new_first_then_old_then_new_alone():
    rig = Rig()
    assert await rig.signed_by() == ["s0"]

    rotated = await rig.endpoints.rotate_secret("we_1", "m_1", overlap=2 * HOUR)

    assert rotated.secret == rig.new_secrets[0] and rotated.secret != OLD
    assert rotated.previous_secret_until == START + 2 * HOUR
    assert await rig.signed_by() == ["s1", "s0"]
    headers, body = rig.sender.sent[-1]
    for secret in (OLD, rotated.secret):  # the receiver switches whenever it likes
        verify(secret, headers, body, now=rig.clock.now())
    rig.clock.advance(2 * 3600 - 1)
    assert await rig.signed_by() == ["s1", "s0"], "the last second of the overlap"
    assert rig.webhooks.endpoint.previous_secret == OLD
    rig.clock.advance(1)
    assert await rig.signed_by() == ["s1"], "the overlap is over"
    assert rig.webhooks.endpoint.previous_secret == "", "dropped by the pass: not kept"
    assert rig.webhooks.endpoint.previous_secret_until is None
    headers, body = rig.sender.sent[-1]
    with pytest.raises(WebhookVerificationError):
        verify(OLD, headers, body, now=rig.clock.now())


async def test_the_default_overlap_is_a_day():
    rig = Rig()

    rotated = await rig.endpoints.rotate_secret("we_1", "m_1")

    assert rotated.previous_secret_until == START + 24 * HOUR
    rig.clock.advance(23 * 3600)
    assert await rig.signed_by() == ["s1", "s0"]
    rig.clock.advance(3600)
    assert await rig.signed_by() == ["s1"]


async def test_rotating_again_in_the_overlap_drops_the_oldest_at_once_two_sign_at_most():
    rig = Rig()
    await rig.endpoints.rotate_secret("we_1", "m_1", overlap=24 * HOUR)
    rig.clock.advance(3600)

    again = await rig.endpoints.rotate_secret("we_1", "m_1", overlap=3 * HOUR)

    assert again.previous_secret_until == START + 4 * HOUR
    assert await rig.signed_by() == ["s2", "s1"]
    rig.clock.advance(3 * 3600)
    assert await rig.signed_by() == ["s2"]


async def test_an_overlap_of_zero_stops_the_old_secret_at_once():
    rig = Rig()
    await rig.endpoints.rotate_secret("we_1", "m_1", overlap=24 * HOUR)

    leaked = await rig.endpoints.rotate_secret("we_1", "m_1", overlap=timedelta(0))

    assert leaked.previous_secret_until is None
    assert await rig.signed_by() == ["s2"]


@pytest.mark.parametrize(
    "overlap", [MAX_SECRET_OVERLAP + timedelta(seconds=1), -HOUR], ids=["over 7 days", "negative"]
)
async def test_an_overlap_out_of_bounds_is_refused_and_changes_nothing(overlap):
    rig = Rig()

    with pytest.raises(InvalidEndpoint) as err:
        await rig.endpoints.rotate_secret("we_1", "m_1", overlap=overlap)

    assert [f for f, _ in err.value.problems] == ["overlap_hours"]
    assert rig.webhooks.endpoint.secret == OLD and not rig.new_secrets


async def test_seven_days_is_the_longest_overlap():
    rig = Rig()
    rotated = await rig.endpoints.rotate_secret("we_1", "m_1", overlap=MAX_SECRET_OVERLAP)
    assert rotated.previous_secret_until == START + MAX_SECRET_OVERLAP


async def test_another_merchants_deleted_or_unknown_endpoint_is_not_found_ops_may_rotate():
    rig = Rig()
    for endpoint_id, merchant in (("we_1", "m_2"), ("we_unknown", "m_1"), ("we_unknown", None)):
        with pytest.raises(EndpointNotFound):
            await rig.endpoints.rotate_secret(endpoint_id, merchant)
    assert rig.webhooks.endpoint.secret == OLD

    rotated = await rig.endpoints.rotate_secret("we_1", None)  # an ops key
    assert rig.webhooks.endpoint.secret == rotated.secret

    await rig.endpoints.delete("we_1", "m_1")
    with pytest.raises(EndpointNotFound):
        await rig.endpoints.rotate_secret("we_1", "m_1")


async def test_a_disabled_endpoint_may_be_rotated_and_stays_disabled():
    rig = Rig()
    rig.webhooks.endpoint.disable("the receiver answered 410 Gone", START)

    rotated = await rig.endpoints.rotate_secret("we_1", "m_1")

    assert rotated.endpoint.status is EndpointStatus.DISABLED
    assert rig.webhooks.endpoint.secret == rotated.secret


async def test_no_secret_is_logged_or_in_the_endpoints_repr(caplog):
    rig = Rig()
    with caplog.at_level(logging.DEBUG):
        rotated = await rig.endpoints.rotate_secret("we_1", "m_1")
        await rig.deliver_one()

    assert "we_1" in caplog.text, "the rotation is logged, by endpoint"
    for secret in (OLD, rotated.secret):
        key = secret.removeprefix("whsec_")
        assert key not in caplog.text and key not in repr(rotated)
