"""Webhook signing keys are stored sealed (docs/security.md, Secrets at rest): read from
the raw columns, on SQLite and PostgreSQL, and still signing what the reference library
(`standardwebhooks`) verifies; rows stored in plain text before are read, then sealed
by `payorch secrets reencrypt`, which also reseals under a new key."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook

from payorch.adapters.persistence.engine import create_engine
from payorch.adapters.persistence.stored_secrets import census, reencrypt, seal_plain
from payorch.adapters.persistence.tables import webhook_endpoints
from payorch.adapters.secret_cipher import SecretCipher, SecretUnreadable, parse_keys
from payorch.bootstrap import check_stored_secrets
from payorch.entrypoints.cli import main
from payorch.settings import InvalidSettings
from payorch.webhooks import SECRET_PREFIX
from tests.conftest import TEST_SECRETS_KEY
from tests.integration.installment_helpers import create_plan, installments_container
from tests.integration.test_webhook_interop import real_time_dispatcher

NEW_KEY = "new2:" + base64.b64encode(bytes(range(50, 82))).decode()
_t = webhook_endpoints


async def raw_row(container, endpoint_id: str) -> dict:
    async with container.engine.connect() as conn:
        row = (await conn.execute(select(_t).where(_t.c.id == endpoint_id))).mappings().one()
    return dict(row)


def database_bytes(database_url: str) -> bytes:
    """A SQLite database's file and WAL, as a copy of it would hold them."""
    path = Path(database_url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


async def test_a_created_then_rotated_endpoints_keys_are_stored_sealed_and_still_sign(
    container, clock, receiver, database_url
):
    app = container.installments
    made = await app.endpoints.create("m_1", receiver.url, "", ["installment_plan.created"])
    rotated = await app.endpoints.rotate_secret(made.endpoint.id, "m_1", timedelta(hours=2))
    old_key = made.secret.removeprefix(SECRET_PREFIX)
    new_key = rotated.secret.removeprefix(SECRET_PREFIX)

    row = await raw_row(container, made.endpoint.id)
    assert row["signing_key"].startswith("enc1:test1:")
    assert row["previous_signing_key"].startswith("enc1:test1:")
    stored = json.dumps(row, default=str)
    for key in (old_key, new_key):
        assert key not in stored
        if database_url.startswith("sqlite"):
            assert key.encode() not in database_bytes(database_url)

    await create_plan(container)
    await real_time_dispatcher(container).run_once()
    (delivered,) = receiver.requests
    for secret in (made.secret, rotated.secret):
        assert Webhook(secret).verify(delivered.body, delivered.headers)["type"] == (
            "installment_plan.created"
        )


async def test_a_sealed_key_copied_into_another_endpoints_row_does_not_open(container, receiver):
    app = container.installments
    one = (await app.endpoints.create("m_1", receiver.url, "", [])).endpoint
    two = (await app.endpoints.create("m_1", receiver.url, "", [])).endpoint
    copied = (await raw_row(container, one.id))["signing_key"]
    async with container.engine.begin() as conn:
        await conn.execute(update(_t).where(_t.c.id == two.id).values(signing_key=copied))
    async with app.uow() as uow:
        assert (await uow.webhooks.get_endpoint(one.id, "m_1")).secret == one.secret
        with pytest.raises(SecretUnreadable, match=two.id):
            await uow.webhooks.get_endpoint(two.id, "m_1")


async def store_in_plain_text(container, endpoint_id: str, current: str, previous: str) -> None:
    """The row as a version before encryption left it."""
    async with container.engine.begin() as conn:
        await conn.execute(
            update(_t)
            .where(_t.c.id == endpoint_id)
            .values(
                signing_key=current.removeprefix(SECRET_PREFIX),
                previous_signing_key=previous.removeprefix(SECRET_PREFIX) or None,
            )
        )


async def test_keys_stored_in_plain_text_sign_until_reencrypt_seals_them_once(
    container, clock, receiver
):
    app = container.installments
    made = await app.endpoints.create("m_1", receiver.url, "", ["installment_plan.created"])
    rotated = await app.endpoints.rotate_secret(made.endpoint.id, "m_1", timedelta(hours=2))
    others = [
        (await app.endpoints.create("m_1", receiver.url, "", ["installment.failed"])) for _ in "ab"
    ]
    await store_in_plain_text(container, made.endpoint.id, rotated.secret, made.secret)
    for other in others:
        await store_in_plain_text(container, other.endpoint.id, other.secret, "")
    assert (await census(container.engine)).plain == 4

    # Read as they are meanwhile: the webhook verifies under either secret.
    await create_plan(container)
    await real_time_dispatcher(container).run_once()
    for secret in (made.secret, rotated.secret):
        Webhook(secret).verify(receiver.requests[-1].body, receiver.requests[-1].headers)

    cipher = container.installments.uow.cipher
    done = await reencrypt(container.engine, cipher, batch=1)
    assert (done.sealed, done.resealed) == (4, 0)
    row = await raw_row(container, made.endpoint.id)
    assert row["signing_key"].startswith("enc1:test1:")
    assert made.secret.removeprefix(SECRET_PREFIX) not in json.dumps(row, default=str)
    again = await reencrypt(container.engine, cipher, batch=1)
    assert (again.sealed, again.resealed) == (0, 0), "idempotent"
    assert (await census(container.engine)).by_key == {"test1": 4}

    await create_plan(container, "plan-2")
    await real_time_dispatcher(container).run_once()
    assert Webhook(rotated.secret).verify(receiver.requests[-1].body, receiver.requests[-1].headers)


async def plain_endpoints(container, receiver, count: int) -> dict[str, tuple[str, str]]:
    """`count` endpoints stored as a version before encryption left them, the first
    during a rotation's overlap: their (current, previous) secrets by id."""
    app = container.installments
    made: dict[str, tuple[str, str]] = {}
    for n in range(count):
        one = await app.endpoints.create("m_1", receiver.url, "", [])
        previous = ""
        if n == 0:
            rotated = await app.endpoints.rotate_secret(one.endpoint.id, "m_1", timedelta(hours=2))
            previous, current = one.secret, rotated.secret
        else:
            current = one.secret
        await store_in_plain_text(container, one.endpoint.id, current, previous)
        made[one.endpoint.id] = (current, previous)
    return made


async def assert_sealed_once(engine, made: dict[str, tuple[str, str]]) -> None:
    """Every value sealed under the test key, and opening to the key it held (a value
    sealed twice would open to a sealed value)."""
    cipher = SecretCipher(parse_keys(TEST_SECRETS_KEY))
    async with engine.connect() as conn:
        rows = {r.id: r for r in (await conn.execute(select(_t))).all()}
    for endpoint_id, (current, previous) in made.items():
        for column, secret in (("signing_key", current), ("previous_signing_key", previous)):
            stored = getattr(rows[endpoint_id], column)
            if not secret:
                assert stored is None
                continue
            assert stored.startswith("enc1:test1:")
            opened = cipher.unseal(stored, f"webhook_endpoints.{column} of {endpoint_id}")
            assert opened == secret.removeprefix(SECRET_PREFIX)


async def test_a_start_seals_the_keys_an_upgrade_left_in_plain_text(
    database_url, clock, receiver, caplog
):
    first = await installments_container(database_url, clock)
    try:
        made = await plain_endpoints(first, receiver, 3)
        assert (await census(first.engine)).plain == 4
    finally:
        await first.close()

    # Two processes starting at once on the upgraded database (replicas, serve beside
    # the scheduler): each migrates, checks and seals, and neither undoes the other.
    started = await asyncio.gather(
        installments_container(database_url, clock), installments_container(database_url, clock)
    )
    try:
        assert (await census(started[0].engine)).by_key == {"test1": 4}
        await assert_sealed_once(started[0].engine, made)
        assert "sealed" in caplog.text and "in plain text under key id 'test1'" in caplog.text
        for current, previous in made.values():
            for secret in (current, previous):
                if secret:
                    assert secret.removeprefix(SECRET_PREFIX) not in caplog.text
        # They sign as before.
        async with started[1].installments.uow() as uow:
            for endpoint_id, (current, _) in made.items():
                assert (await uow.webhooks.get_endpoint(endpoint_id, "m_1")).secret == current
    finally:
        for one in started:
            await one.close()


async def test_starts_sealing_at_once_share_the_rows_and_seal_each_value_once(
    container, database_url, receiver
):
    made = await plain_endpoints(container, receiver, 6)
    cipher = container.installments.uow.cipher
    engines = [create_engine(database_url) for _ in range(3)]
    try:
        done = await asyncio.gather(*(seal_plain(e, cipher, batch=1) for e in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    assert sum(d.sealed for d in done) == 7
    assert all(d.resealed == 0 for d in done)
    await assert_sealed_once(container.engine, made)
    again = await seal_plain(container.engine, cipher)
    assert (again.sealed, again.resealed) == (0, 0), "idempotent"


async def test_a_start_leaves_values_under_an_older_key_to_reencrypt(
    container, database_url, clock, receiver
):
    made = await container.installments.endpoints.create("m_1", receiver.url, "", [])
    before = (await raw_row(container, made.endpoint.id))["signing_key"]
    restarted = await installments_container(
        database_url, clock, secrets_key=f"{NEW_KEY},{TEST_SECRETS_KEY}"
    )
    await restarted.close()
    assert (await raw_row(container, made.endpoint.id))["signing_key"] == before


async def test_after_a_key_rotation_reencrypt_reseals_under_the_new_key_and_the_old_can_go(
    container, database_url, clock, receiver
):
    app = container.installments
    made = await app.endpoints.create("m_1", receiver.url, "", [])
    old_only = container.installments.uow.cipher
    both = SecretCipher(parse_keys(f"{NEW_KEY},{TEST_SECRETS_KEY}"))
    await check_stored_secrets(container.engine, both)  # the old key still opens them

    done = await reencrypt(container.engine, both)
    assert (done.sealed, done.resealed) == (0, 1)
    assert (await census(container.engine)).by_key == {"new2": 1}
    with pytest.raises(InvalidSettings, match="'new2'") as refused:
        await check_stored_secrets(container.engine, old_only)
    assert NEW_KEY.split(":")[1] not in str(refused.value)

    # The new key alone now reads it.
    restarted = await installments_container(database_url, clock, secrets_key=NEW_KEY)
    try:
        async with restarted.installments.uow() as uow:
            assert (await uow.webhooks.get_endpoint(made.endpoint.id, "m_1")).secret == (
                made.secret
            )
    finally:
        await restarted.close()


async def test_the_service_refuses_to_start_without_the_key_its_secrets_are_sealed_under(
    container, database_url, clock, receiver
):
    await container.installments.endpoints.create("m_1", receiver.url, "", [])
    with pytest.raises(InvalidSettings, match="no key with id 'test1'"):
        await installments_container(database_url, clock, secrets_key=NEW_KEY)


async def test_the_cli_reports_then_reencrypts_in_batches(
    container, database_url, capsys, receiver
):
    app = container.installments
    made = [await app.endpoints.create("m_1", receiver.url, "", []) for _ in "abc"]
    for m in made[:2]:
        await store_in_plain_text(container, m.endpoint.id, m.secret, "")

    # In a thread: the command runs its own event loop.
    assert await asyncio.to_thread(main, ["secrets", "status", "--database-url", database_url]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status == {
        "write_key_id": "test1",
        "plain_text": 2,
        "by_key_id": {"test1": 1},
        "to_reencrypt": 2,
        "unknown_key_ids": [],
    }
    argv = ["secrets", "reencrypt", "--database-url", database_url, "--batch-size", "2"]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == {"key_id": "test1", "sealed": 2, "resealed": 0}
    for m in made:
        assert m.secret.removeprefix(SECRET_PREFIX) not in out.out + out.err
    assert (await census(container.engine)).by_key == {"test1": 3}
    assert await asyncio.to_thread(main, argv) == 0
    assert json.loads(capsys.readouterr().out)["sealed"] == 0


async def test_an_endpoint_whose_key_does_not_open_holds_up_no_other_endpoints_delivery(
    container, clock, receiver, caplog
):
    # A value altered or copied in the database (after the start-up check): that
    # endpoint's deliveries wait, logged; the fan-out, which opens no key, and every
    # other endpoint's deliveries go on.
    app = container.installments
    kinds = ["installment_plan.created"]
    good = await app.endpoints.create("m_1", receiver.url + "good", "", kinds)
    bad = await app.endpoints.create("m_1", receiver.url + "bad", "", kinds)
    copied = (await raw_row(container, good.endpoint.id))["signing_key"]
    async with container.engine.begin() as conn:
        await conn.execute(update(_t).where(_t.c.id == bad.endpoint.id).values(signing_key=copied))

    await create_plan(container)
    await real_time_dispatcher(container).run_once()
    (delivered,) = receiver.requests
    assert delivered.path.endswith("good")
    Webhook(good.secret).verify(delivered.body, delivered.headers)
    async with app.uow() as uow:
        (waiting,) = await uow.webhooks.list_deliveries(
            None, status=None, endpoint_id=bad.endpoint.id, limit=10, after=None
        )
    assert waiting.status.value == "pending"
    assert f"delivery {waiting.id} not sent" in caplog.text and bad.endpoint.id in caplog.text
    for secret in (good.secret, bad.secret):
        assert secret.removeprefix(SECRET_PREFIX) not in caplog.text
