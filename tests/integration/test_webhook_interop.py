"""A receiver built on the Standard Webhooks reference library (`standardwebhooks`, not
payorch's own code) verifies what the real dispatcher sends over HTTP.

The library checks webhook-timestamp against the real time, as a receiver does, so the
dispatcher signs with the system clock here (as in production) while the business clock
stays the test's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as LibraryVerificationError

from payorch.adapters.clock import SystemClock
from payorch.adapters.webhooks.sender import AiohttpWebhookSender
from payorch.app.webhook_delivery import WebhookDispatcher
from payorch.webhooks import generate_secret, verify
from tests.integration.installment_helpers import create_plan


def real_time_dispatcher(container) -> WebhookDispatcher:
    """The container's dispatcher as `payorch scheduler` builds it: the same store, the
    aiohttp sender behind the URL guard, webhook-timestamp from the system clock."""
    app = container.installments
    return WebhookDispatcher(
        app.uow,
        AiohttpWebhookSender(app.guard),
        container.clock,
        wall_clock=SystemClock(),
        worker_id="interop",
        timeout_s=2.0,
    )


async def test_the_reference_library_verifies_every_delivery_and_its_retry(
    container, clock, receiver
):
    app = container.installments
    creation = await app.endpoints.create("m_1", receiver.url, "", [])  # every type
    plan = (await create_plan(container)).plan
    dispatcher = real_time_dispatcher(container)
    receiver.script = [500]  # the first request fails: its delivery is tried again

    await dispatcher.run_once()
    clock.advance(7)  # past the 5 s (+20 %) before the second attempt
    await dispatcher.run_once()

    # The secret as CreateWebhookEndpoint hands it out, taken by the library as is.
    library = Webhook(creation.secret)
    told = [library.verify(r.body, r.headers) for r in receiver.requests]
    kinds = {e["type"] for e in told}
    assert {"installment_plan.created", "installment.paid", "payment.completed"} <= kinds
    assert {e["data"].get("plan_id") for e in told} >= {plan.id}

    by_id: dict[str, list] = {}
    for r in receiver.requests:
        by_id.setdefault(r.headers["webhook-id"], []).append(r)
    (retried,) = [rs for rs in by_id.values() if len(rs) == 2]
    assert retried[0].body == retried[1].body, "a retry carries the same bytes and id"
    assert len(by_id) == len(told) - 1
    for r in receiver.requests:
        assert r.headers["content-type"] == "application/json"
        assert r.headers["user-agent"].startswith("payorch-webhooks/")
        assert r.headers["webhook-timestamp"].isdigit(), "Unix seconds"

    with pytest.raises(LibraryVerificationError):
        Webhook(generate_secret()).verify(receiver.requests[0].body, receiver.requests[0].headers)


def test_what_the_library_signs_verifies_with_payorch_also_among_several_signatures():
    old, new = generate_secret(), generate_secret()
    at = datetime(2027, 1, 5, tzinfo=UTC)
    body = '{"type":"installment.paid","data":{"amount_minor":3334,"currency":"EUR"}}'
    signatures = [Webhook(s).sign("evt_1", at, body) for s in (old, new)]
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
    for secret in (old, new):
        assert verify(secret, headers, body, now=at)["data"]["amount_minor"] == 3334


async def test_a_secret_rotated_through_a_second_endpoint_verifies_under_either_secret(
    container, clock, receiver
):
    # No endpoint has two secrets: a merchant rotates by adding an endpoint on the same
    # URL, taking both secrets while the old one is deleted. Each event comes once per
    # endpoint under one webhook-id, so the receiver keeps one of each.
    app = container.installments
    old = await app.endpoints.create("m_1", receiver.url, "", ["installment_plan.created"])
    new = await app.endpoints.create("m_1", receiver.url, "", ["installment_plan.created"])
    await create_plan(container)
    dispatcher = real_time_dispatcher(container)
    await dispatcher.run_once()
    await app.endpoints.delete(old.endpoint.id, "m_1")
    await create_plan(container, "plan-2")
    await dispatcher.run_once()

    def accepted(r) -> dict:
        for secret in (new.secret, old.secret):
            try:
                return dict(Webhook(secret).verify(r.body, r.headers))
            except LibraryVerificationError:
                continue
        raise AssertionError("signed under neither secret")

    kept = {r.headers["webhook-id"]: accepted(r) for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(kept) == 2
    last = receiver.requests[-1]
    Webhook(new.secret).verify(last.body, last.headers)  # after the delete: the new one
    with pytest.raises(LibraryVerificationError):
        Webhook(old.secret).verify(last.body, last.headers)
