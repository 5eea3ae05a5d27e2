"""The secrets stored in the database, by the key sealing them: a census for the start-up
check and `payorch secrets status`; the sealing of those still in plain text at every
start; and `payorch secrets reencrypt`, which seals them and those under an older key
with the key that seals now (docs/security.md, Secrets at rest)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import Column, ColumnElement, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from payorch.adapters.persistence.tables import webhook_endpoints
from payorch.adapters.persistence.webhooks import key_context
from payorch.adapters.secret_cipher import MARKER, SecretCipher, is_sealed, key_id_of

BATCH = 500
_t = webhook_endpoints
# Every stored secret: the webhook signing keys, the current one and a rotation's old one.
SEALED_COLUMNS: tuple[Column[str], ...] = (_t.c.signing_key, _t.c.previous_signing_key)
# Long enough for the marker and any key id ("enc1:" + 16 + ":").
_HEAD = 24


@dataclass
class Census:
    """Stored secrets by what seals them: "" for plain text, else a key id."""

    by_key: Counter[str] = field(default_factory=Counter)

    @property
    def plain(self) -> int:
        return self.by_key[""]

    def unknown_to(self, cipher: SecretCipher) -> list[str]:
        """The key ids values are sealed under that `cipher` does not have."""
        return sorted(k for k in self.by_key if k and k not in cipher.key_ids)

    def to_reseal(self, cipher: SecretCipher) -> int:
        return sum(n for k, n in self.by_key.items() if k != cipher.write_key_id)


async def census(engine: AsyncEngine) -> Census:
    """Reads only the head of each value: the marker and the key id."""
    counted = Census()
    async with engine.connect() as conn:
        for column in SEALED_COLUMNS:
            heads = await conn.scalars(
                select(func.substr(column, 1, _HEAD)).where(column.is_not(None))
            )
            counted.by_key.update(key_id_of(h) if is_sealed(h) else "" for h in heads)
    return counted


@dataclass(frozen=True)
class Resealed:
    sealed: int = 0  # were plain text
    resealed: int = 0  # were under an older key


async def reencrypt(engine: AsyncEngine, cipher: SecretCipher, *, batch: int = BATCH) -> Resealed:
    """Seal every stored secret with the key that seals now, `batch` endpoints per
    transaction. Idempotent: values already under that key are left as they are.
    A value changed meanwhile (a rotation) is left to whoever changed it: the update
    matches the value read. SecretUnreadable for a value no configured key opens."""
    return await _reseal(engine, cipher, batch=batch, plain_only=False)


async def seal_plain(engine: AsyncEngine, cipher: SecretCipher, *, batch: int = BATCH) -> Resealed:
    """Seal the stored secrets still in plain text (rows stored before encryption) with
    the key that seals now, as every start does; values sealed under an older key are
    left to `reencrypt` (a key rotation). Only rows holding a plain value are read.
    Several processes starting at once share the work: on PostgreSQL each transaction
    takes its rows with FOR UPDATE SKIP LOCKED, so one seals what another holds, and
    every update matches the value read, so a value is never sealed twice."""
    return await _reseal(engine, cipher, batch=batch, plain_only=True)


def _plain(column: Column[str]) -> ColumnElement[bool]:
    return and_(column.is_not(None), column != "", column.not_like(MARKER + ":%"))


async def _reseal(
    engine: AsyncEngine, cipher: SecretCipher, *, batch: int, plain_only: bool
) -> Resealed:
    sealed = resealed = 0
    after = ""
    while True:
        async with engine.begin() as conn:
            query = select(_t.c.id, *SEALED_COLUMNS).where(_t.c.id > after)
            if plain_only:
                query = query.where(or_(*(_plain(c) for c in SEALED_COLUMNS))).with_for_update(
                    skip_locked=True
                )
            rows = (await conn.execute(query.order_by(_t.c.id).limit(batch))).all()
            if not rows:
                return Resealed(sealed, resealed)
            after = rows[-1].id
            for row in rows:
                for column in SEALED_COLUMNS:
                    stored = getattr(row, column.name)
                    if not stored or cipher.is_current(stored):
                        continue
                    if plain_only and is_sealed(stored):
                        continue
                    context = key_context(row.id, column.name)
                    fresh = cipher.seal(cipher.unseal(stored, context), context)
                    done = await conn.execute(
                        update(_t)
                        .where(_t.c.id == row.id, column == stored)
                        .values({column.name: fresh})
                    )
                    if done.rowcount == 1 and is_sealed(stored):
                        resealed += 1
                    elif done.rowcount == 1:
                        sealed += 1
