"""Fixtures the integration tests share: the service's container and a webhook receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from payorch.adapters.clock import ManualClock
from payorch.bootstrap import Container
from tests.integration.installment_helpers import installments_container
from tests.integration.webhook_receiver import Receiver


@pytest.fixture
async def container(database_url: str, clock: ManualClock) -> AsyncIterator[Container]:
    """The service on the test database with the simulated processor and webhooks to
    loopback addresses allowed (the installments' settings), closed after the test."""
    c = await installments_container(database_url, clock)
    yield c
    await c.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook endpoint on a loopback port, recording what it is sent."""
    r = await Receiver().start()
    yield r
    await r.stop()
