"""Merchant configs, one row per version (history kept)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from payorch.adapters.persistence.tables import merchant_configs
from payorch.app.ports import ConcurrentUpdate
from payorch.domain.merchant_config import InstallmentPolicy, MerchantConfig, MethodRule
from payorch.domain.payment import MethodType
from payorch.domain.retry import RetryPolicy


def to_body(c: MerchantConfig) -> dict[str, Any]:
    return {
        "methods": [
            [r.method.value, r.min_amount_minor, r.max_amount_minor, list(r.processors)]
            for r in c.methods
        ],
        "allowed_currencies": sorted(c.allowed_currencies),
        "retry_policy": [
            c.retry_policy.max_retries,
            c.retry_policy.base_delay_ms,
            c.retry_policy.max_delay_ms,
        ],
        "allow_partial": c.allow_partial,
        "fallback_on_failure": c.fallback_on_failure,
        "installment_policy": [
            c.installment_policy.min_total_minor,
            c.installment_policy.count,
            c.installment_policy.interval_days,
            list(c.installment_policy.dunning_days),
        ],
    }


def from_body(merchant_id: str, version: int, b: dict[str, Any]) -> MerchantConfig:
    lo, count, interval, dunning = b["installment_policy"]
    return MerchantConfig(
        merchant_id=merchant_id,
        version=version,
        methods=tuple(
            MethodRule(MethodType(m), lo_, hi, tuple(p)) for m, lo_, hi, p in b["methods"]
        ),
        allowed_currencies=frozenset(b["allowed_currencies"]),
        retry_policy=RetryPolicy(*b["retry_policy"]),
        allow_partial=b["allow_partial"],
        fallback_on_failure=b["fallback_on_failure"],
        installment_policy=InstallmentPolicy(lo, count, interval, tuple(dunning)),
    )


class SqlAlchemyMerchantConfigStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def current(self, merchant_id: str) -> MerchantConfig | None:
        async with self._engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(merchant_configs)
                        .where(merchant_configs.c.merchant_id == merchant_id)
                        .order_by(merchant_configs.c.version.desc())
                        .limit(1)
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        return from_body(merchant_id, row["version"], row["body"])

    async def version(self, merchant_id: str, version: int) -> MerchantConfig | None:
        async with self._engine.connect() as conn:
            body = await conn.scalar(
                select(merchant_configs.c.body).where(
                    merchant_configs.c.merchant_id == merchant_id,
                    merchant_configs.c.version == version,
                )
            )
        return None if body is None else from_body(merchant_id, version, body)

    async def save(self, config: MerchantConfig, now: datetime) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    merchant_configs.insert(),
                    [
                        {
                            "merchant_id": config.merchant_id,
                            "version": config.version,
                            "body": to_body(config),
                            "created_at": now,
                        }
                    ],
                )
        except IntegrityError as exc:
            raise ConcurrentUpdate(config.merchant_id) from exc
