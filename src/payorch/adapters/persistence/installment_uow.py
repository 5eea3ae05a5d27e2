"""The unit of work of installments and webhooks: the payments unit of work (one
transaction, SQLite's write lock shared in-process) with these repositories on it."""

from __future__ import annotations

from payorch.adapters.persistence.installments import (
    InstallmentStatements,
    SqlAlchemyInstallmentPlanRepository,
)
from payorch.adapters.persistence.repository import SqlAlchemyPaymentRepository
from payorch.adapters.persistence.unit_of_work import (
    SqlAlchemyUnitOfWork,
    SqlAlchemyUnitOfWorkFactory,
)
from payorch.adapters.persistence.webhooks import SqlAlchemyWebhookRepository
from payorch.adapters.secret_cipher import SecretCipher


class SqlAlchemyInstallmentUnitOfWork:
    plans: SqlAlchemyInstallmentPlanRepository
    webhooks: SqlAlchemyWebhookRepository
    payments: SqlAlchemyPaymentRepository

    def __init__(
        self, inner: SqlAlchemyUnitOfWork, cipher: SecretCipher, statements: InstallmentStatements
    ) -> None:
        self._inner = inner
        self._cipher = cipher
        self._statements = statements

    async def __aenter__(self) -> SqlAlchemyInstallmentUnitOfWork:
        await self._inner.__aenter__()
        conn = self._inner.connection
        self.plans = SqlAlchemyInstallmentPlanRepository(conn, self._statements)
        self.webhooks = SqlAlchemyWebhookRepository(conn, self._cipher)
        self.payments = self._inner.payments
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.__aexit__(*exc)

    async def commit(self) -> None:
        await self._inner.commit()


class SqlAlchemyInstallmentUnitOfWorkFactory:
    def __init__(self, payments_uow: SqlAlchemyUnitOfWorkFactory, cipher: SecretCipher) -> None:
        self._payments_uow = payments_uow
        # Seals the webhook signing keys the repositories store (docs/security.md).
        self.cipher = cipher
        self._statements = InstallmentStatements.for_dialect(payments_uow.engine.dialect)

    def __call__(self) -> SqlAlchemyInstallmentUnitOfWork:
        return SqlAlchemyInstallmentUnitOfWork(self._payments_uow(), self.cipher, self._statements)
