"""The installment scheduler: claims due installments in batches and charges each once.

Any number of workers may run against PostgreSQL: a claim is a row lock skipped by
the others plus a lease. A worker that stops mid-charge loses its lease; whoever
claims the installment next charges under the same attempt number, so the payments
idempotency gate replays (or waits for) the first charge instead of making a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from payorch.app.installment_ports import Claim, InstallmentUnitOfWorkFactory
from payorch.app.installments import InstallmentCharger
from payorch.app.ports import Clock
from payorch.domain.installments import ChargeOutcome, InstallmentPlan

log = logging.getLogger("payorch.scheduler")


@dataclass(slots=True)
class SchedulerStats:
    claimed: int = 0
    # Claims taken over from a worker whose lease ran out.
    reclaimed: int = 0
    paid: int = 0
    failed: int = 0
    unresolved: int = 0
    errors: int = 0

    def add(self, other: SchedulerStats) -> None:
        for name in ("claimed", "reclaimed", "paid", "failed", "unresolved", "errors"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {
            "claimed": self.claimed,
            "reclaimed": self.reclaimed,
            "paid": self.paid,
            "failed": self.failed,
            "unresolved": self.unresolved,
            "errors": self.errors,
        }


class InstallmentScheduler:
    def __init__(
        self,
        uow: InstallmentUnitOfWorkFactory,
        charger: InstallmentCharger,
        clock: Clock,
        *,
        worker_id: str,
        batch_size: int = 100,
        lease_s: float = 120.0,
        concurrency: int = 8,
    ) -> None:
        self._uow = uow
        self._charger = charger
        self._clock = clock
        self.worker_id = worker_id
        self._batch = batch_size
        self._lease = timedelta(seconds=lease_s)
        self._concurrency = concurrency

    async def run_once(self) -> SchedulerStats:
        """Charge everything due now, batch after batch, until nothing new is due."""
        stats = SchedulerStats()
        seen: set[str] = set()
        limit = asyncio.Semaphore(self._concurrency)
        while True:
            now = self._clock.now()
            async with self._uow() as uow:
                claims = await uow.plans.claim_due(
                    now=now, worker=self.worker_id, lease_until=now + self._lease, limit=self._batch
                )
                await uow.commit()
            fresh = [c for c in claims if c.installment_id not in seen]
            if not fresh:
                return stats
            seen.update(c.installment_id for c in fresh)
            stats.claimed += len(fresh)
            stats.reclaimed += sum(1 for c in fresh if c.reclaimed)
            log.info(
                "claimed %d installments (%d reclaimed)",
                len(fresh),
                sum(1 for c in fresh if c.reclaimed),
            )
            by_plan: dict[str, list[Claim]] = {}
            for c in fresh:
                by_plan.setdefault(c.plan_id, []).append(c)
            try:
                async with self._uow() as uow:
                    plans = await uow.plans.get_many(list(by_plan))
            except Exception:
                stats.errors += len(fresh)
                log.exception("reading %d claimed plans failed", len(by_plan))
                continue

            async def one(plan: InstallmentPlan, claims: list[Claim]) -> None:
                # One task per plan: its installments are charged one after the other.
                async with limit:
                    for claim in claims:
                        plan = await self._charge(plan, claim, stats)

            await asyncio.gather(*(one(plans[p], cs) for p, cs in by_plan.items() if p in plans))

    async def _charge(
        self, plan: InstallmentPlan, claim: Claim, stats: SchedulerStats
    ) -> InstallmentPlan:
        # One failing installment never stops the batch: it stays claimed until its
        # lease runs out, then it is taken up again under the same attempt number.
        try:
            result, plan = await self._charger.charge(plan, claim.installment_id, claim.attempt)
        except Exception:
            stats.errors += 1
            log.exception("charging installment %s failed", claim.installment_id)
            try:
                async with self._uow() as uow:  # its state is unknown now: read it again
                    fresh = await uow.plans.get(claim.plan_id, None)
            except Exception:
                return plan
            return fresh or plan
        if result.outcome is ChargeOutcome.PAID:
            stats.paid += 1
        elif result.outcome is ChargeOutcome.FAILED:
            stats.failed += 1
        else:
            stats.unresolved += 1
        return plan

    async def run_forever(self, interval_s: float, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                stats = await self.run_once()
                if stats.claimed:
                    log.info("scheduler pass: %s", stats.as_dict())
            except Exception:
                log.exception("scheduler pass failed; next pass in %.0f s", interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
