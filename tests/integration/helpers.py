"""Building real containers on a test database with simulated processors."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from payorch.adapters.persistence.tables import events
from payorch.app.ports import Clock
from payorch.bootstrap import Container, bootstrap
from payorch.domain.request import RawPaymentRequest, parse_payment_request
from payorch.settings import Settings
from tests.conftest import TEST_SECRETS_KEY
from tests.fakes.dying import ServerDied


async def make_container(
    database_url: str,
    clock: Clock,
    *,
    processors: str = "simulated",
    simulate: str = "",
    stripe_api_key: str = "",
    stripe_api_base: str = "",
) -> Container:
    """`stripe_api_base`: a fake Stripe's URL, with its key, for the processor "stripe"."""
    settings = Settings(
        database_url=database_url,
        secrets_key=TEST_SECRETS_KEY,
        processors=processors,
        simulate=simulate,
        stripe_api_key=stripe_api_key,
        stripe_api_base=stripe_api_base,
    )
    return await bootstrap(settings, clock=clock)


async def make_stripe_container(database_url: str, clock: Clock, fake: Any) -> Container:
    """The service on a fake Stripe (through the real SDK), as the processor "stripe"."""
    return await make_container(
        database_url,
        clock,
        processors="stripe",
        stripe_api_key=fake.api_key,
        stripe_api_base=fake.url,
    )


def core_request(
    request_id: str = "r-1",
    *,
    merchant: str = "m_1",
    amount: int = 1999,
    token: str = "pm_card_visa",
    currency: str = "USD",
):
    return parse_payment_request(
        RawPaymentRequest(
            merchant_id=merchant,
            request_id=request_id,
            amount_minor=amount,
            currency=currency,
            payment_method=token,
        )
    )


async def event_payloads(
    container: Container, aggregate_id: str, name: str
) -> list[dict[str, Any]]:
    """The payloads of a payment's (or a plan's) outbox events called `name`, in order."""
    async with container.engine.connect() as conn:
        rows = await conn.execute(
            select(events.c.payload)
            .where(events.c.payment_id == aggregate_id, events.c.name == name)
            .order_by(events.c.sequence)
        )
        return [dict(p) for p in rows.scalars()]


async def left_processing(container: Container) -> None:
    """A payment whose server died once its row was stored, before any call."""
    sim = container.simulated["simulated"]
    real = sim.authorize

    async def dies(request):
        raise ServerDied("the server died")

    sim.authorize = dies
    core = parse_payment_request(
        RawPaymentRequest(
            merchant_id="m_1",
            request_id="r-left",
            amount_minor=5000,
            currency="EUR",
            payment_method="pm_card_visa",
        )
    )
    with pytest.raises(ServerDied):
        await container.payments.create(core, deadline_s=None)
    sim.authorize = real
