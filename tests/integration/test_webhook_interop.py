"""A receiver built on the Standard Webhooks reference library (`standardwebhooks`, not
payorch's own code) verifies what the real dispatcher sends over HTTP.

The library checks webhook-timestamp against the real time, as a receiver does, so the
dispatcher signs with the system clock here (as in production) while the business clock
stays the test's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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


async def test_during_a_rotation_the_library_verifies_under_the_old_or_the_new_secret(
    container, clock, receiver
):
    # One endpoint, rotated: for the overlap each attempt carries `v1,<new> v1,<old>`,
    # so a receiver on the old secret and one already on the new both accept it; after
    # the overlap only the new one signs.
    app = container.installments
    made = await app.endpoints.create("m_1", receiver.url, "", ["installment_plan.created"])
    dispatcher = real_time_dispatcher(container)
    rotated = await app.endpoints.rotate_secret(made.endpoint.id, "m_1", timedelta(hours=2))
    old, new = Webhook(made.secret), Webhook(rotated.secret)

    await create_plan(container)
    await dispatcher.run_once()
    (during,) = receiver.requests
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    for library in (old, new):
        assert library.verify(during.body, during.headers)["type"] == "installment_plan.created"

    clock.advance(2 * 3600)  # the business clock: the overlap is over
    await create_plan(container, "plan-2")
    await dispatcher.run_once()
    after = receiver.requests[-1]
    assert len(receiver.requests) == 2, "one endpoint: each event comes once"
    assert new.verify(after.body, after.headers)["type"] == "installment_plan.created"
    with pytest.raises(LibraryVerificationError):
        old.verify(after.body, after.headers)
