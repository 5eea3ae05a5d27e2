"""API keys in the database: only the SHA-256 of a key is stored."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from payorch.adapters.persistence.tables import api_keys
from payorch.app.auth import IssuedKey, Principal, Scope, issue_key


class SqlAlchemyApiKeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def find(self, key_hash: str) -> Principal | None:
        async with self._engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(api_keys).where(
                            api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)
                        )
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        return Principal(Scope(row["scope"]), row["merchant_id"], row["id"])

    async def create(
        self, *, merchant_id: str | None, scope: Scope, label: str, now: datetime
    ) -> IssuedKey:
        key = issue_key()
        async with self._engine.begin() as conn:
            await conn.execute(
                api_keys.insert(),
                [
                    {
                        "id": key.key_id,
                        "key_hash": key.key_hash,
                        "merchant_id": merchant_id,
                        "scope": scope.value,
                        "label": label,
                        "created_at": now,
                        "revoked_at": None,
                    }
                ],
            )
        return key

    async def revoke(self, key_id: str, *, now: datetime) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return result.rowcount == 1

    async def list(self) -> list[dict[str, object]]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(api_keys).order_by(api_keys.c.created_at))).mappings()
            return [
                {
                    k: row[k]
                    for k in ("id", "merchant_id", "scope", "label", "created_at", "revoked_at")
                }
                for row in rows
            ]

    async def count_active(self) -> int:
        async with self._engine.connect() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count())
                        .select_from(api_keys)
                        .where(api_keys.c.revoked_at.is_(None))
                    )
                ).scalar_one()
            )
