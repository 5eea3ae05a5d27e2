"""An in-memory unit of work of installments and webhooks: it holds whatever repository
fakes a test hands it, and a transaction that has nothing to commit or roll back."""

from __future__ import annotations

from typing import Any


class FakeInstallmentUnitOfWork:
    def __init__(self, *, plans: Any = None, webhooks: Any = None, payments: Any = None) -> None:
        self.plans, self.webhooks, self.payments = plans, webhooks, payments

    async def __aenter__(self) -> FakeInstallmentUnitOfWork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def commit(self) -> None:
        return None
