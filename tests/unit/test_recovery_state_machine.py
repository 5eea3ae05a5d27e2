"""Stateful property: no interleaving of faults ever charges twice (in-memory storage)."""

from __future__ import annotations

from hypothesis import settings

from tests.fakes.memory import FakeUnitOfWorkFactory
from tests.recovery_machine import RecoveryMachine


async def _memory_store():
    async def cleanup() -> None:
        return None

    return FakeUnitOfWorkFactory(), cleanup


class InMemoryRecovery(RecoveryMachine):
    store_factory = staticmethod(_memory_store)


TestRecoveryInMemory = InMemoryRecovery.TestCase
TestRecoveryInMemory.settings = settings(settings.default, stateful_step_count=25)
