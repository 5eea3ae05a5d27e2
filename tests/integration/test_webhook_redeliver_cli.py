"""`payorch webhooks redeliver --endpoint`: an endpoint's missed and dead-lettered events
queued again from the command line, once, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from payorch.adapters.clock import ManualClock
from payorch.domain.webhook_delivery import DeliveryStatus
from payorch.entrypoints.cli import main
from tests.integration.installment_helpers import installments_container
from tests.integration.test_webhook_store_contract import SqlStore, change_endpoint, outage_of_we_1

WINDOW = ["--since", "2025-12-31T23:00:00Z", "--until", "2026-01-01T12:00:00Z"]


async def seeded(url: str, *, disabled: bool = False) -> None:
    """The outage of tests/integration/test_webhook_store_contract.py; `disabled`: we_1
    disabled again afterwards."""
    clock = ManualClock()
    container = await installments_container(url, clock)
    try:
        store = SqlStore(container)
        await outage_of_we_1(store, clock)
        if disabled:
            await change_endpoint(store, "we_1", lambda ep: ep.disable("410", clock.now()))
    finally:
        await container.close()


async def statuses(url: str) -> dict[str, Any]:
    container = await installments_container(url, ManualClock())
    try:
        made = await SqlStore(container).deliveries()
        return {d.event_id: d.status for d in made if d.endpoint_id == "we_1"}
    finally:
        await container.close()


def redeliver(url: str, *argv: str) -> int:
    return main(["webhooks", "redeliver", "--database-url", url, "--endpoint", "we_1", *argv])


def test_the_command_counts_then_queues_what_the_endpoint_missed_once(new_database_url, capsys):
    asyncio.run(seeded(new_database_url))
    before = asyncio.run(statuses(new_database_url))

    assert redeliver(new_database_url, *WINDOW, "--dry-run") == 0
    dry = json.loads(capsys.readouterr().out)
    assert asyncio.run(statuses(new_database_url)) == before
    assert redeliver(new_database_url, *WINDOW) == 0
    done = json.loads(capsys.readouterr().out)
    assert redeliver(new_database_url, "--dead") == 0
    no_dead_left = json.loads(capsys.readouterr().out)

    assert (dry["dry_run"], dry["queued"], dry["requeued"]) == (True, 2, 1)
    assert {**done, "dry_run": True} == dry
    assert (done["merchant_id"], done["already_delivered"], done["before_endpoint"]) == (
        "m_1",
        1,
        1,
    )
    assert asyncio.run(statuses(new_database_url)) == {
        "ev_1": DeliveryStatus.DELIVERED,
        "ev_2": DeliveryStatus.PENDING,
        "ev_3": DeliveryStatus.PENDING,
        "ev_4": DeliveryStatus.PENDING,
        "ev_5": DeliveryStatus.PENDING,
    }
    assert no_dead_left["requeued"] == 0


def test_a_disabled_endpoint_is_refused_in_one_line_saying_to_enable_it(new_database_url, capsys):
    asyncio.run(seeded(new_database_url, disabled=True))
    before = asyncio.run(statuses(new_database_url))

    assert redeliver(new_database_url, "--dead") == 1

    err = capsys.readouterr().err
    assert err == (
        "payorch webhooks redeliver: endpoint we_1 is disabled: enable it first"
        " (payorch webhooks enable-endpoint we_1), then run this again\n"
    )
    assert asyncio.run(statuses(new_database_url)) == before


def test_an_unknown_endpoint_is_one_line_with_exit_1(new_database_url, capsys):
    assert redeliver(new_database_url, "--dead") == 1
    assert capsys.readouterr().err == "payorch webhooks redeliver: no such endpoint\n"
