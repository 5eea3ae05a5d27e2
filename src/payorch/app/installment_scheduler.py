"""The installment scheduler: claims due installments in batches and charges each once.

Any number of workers may run against PostgreSQL: a claim is a row lock skipped by
the others plus a lease. A worker that stops mid-charge loses its lease; whoever
claims the installment next charges under the same attempt number, so the payments
idempotency gate replays (or waits for) the first charge instead of making a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from payorch.app.failed_passes import log_failed_pass, log_failure
from payorch.app.installment_ports import Claim, InstallmentUnitOfWorkFactory
from payorch.app.installments import InstallmentCharger, RecordCharge
from payorch.app.observability import tell
from payorch.app.ports import Clock
from payorch.domain.installments import (
    ChargeOutcome,
    InstallmentPlan,
    InstallmentStatus,
    PlanStatus,
)

log = logging.getLogger("payorch.scheduler")


@dataclass(slots=True)
class SchedulerStats:
    claimed: int = 0
    # Claims taken over from a worker whose lease ran out.
    reclaimed: int = 0
    paid: int = 0
    failed: int = 0
    # Of `failed`, those that ran out of the dunning ladder (failed_final): each put
    # its plan in breach.
    failed_final: int = 0
    unresolved: int = 0
    errors: int = 0
    # Charges no processor could take (every breaker open): still due, after a pause.
    postponed: int = 0
    # Claims given up uncharged: the plan was cancelled or breached before they started.
    # A charge of the attempt found when its withdrawal is saved counts as what it came
    # to (paid, failed, unresolved while held), not here.
    withdrawn: int = 0

    def add(self, other: SchedulerStats) -> None:
        for name in _FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = (
    "claimed",
    "reclaimed",
    "paid",
    "failed",
    "failed_final",
    "unresolved",
    "errors",
    "postponed",
    "withdrawn",
)


def _withdrawal_came_to(plan: InstallmentPlan, claim: Claim) -> ChargeOutcome:
    """What an attempt the charger found WITHDRAWN came to, as recorded on `plan` (as
    stored after the save). The save looks for the attempt's payment again once it holds
    the plan's row (InstallmentCharger.record): one stored since the charger's look is
    recorded instead (PAID or FAILED, in the installment's charges under this attempt),
    or held for a later look while it is not settled (still processing, this attempt).
    Only otherwise was the claim given up uncharged."""
    inst = plan.installment(claim.installment_id)
    charge = next((c for c in inst.charges if c.attempt == claim.attempt), None)
    if charge is not None:
        return charge.outcome
    if inst.status is InstallmentStatus.PROCESSING and inst.attempts == claim.attempt:
        return ChargeOutcome.UNRESOLVED
    return ChargeOutcome.WITHDRAWN


def _log_failure(plan: InstallmentPlan, installment_id: str) -> None:
    """One line per failed charge, as recorded: rescheduled on the dunning ladder, or
    failed for good with the plan in breach (the pass line only counts them)."""
    inst = plan.installment(installment_id)
    ids = {"merchant_id": plan.merchant_id, "payment_id": inst.payment_id}
    if inst.status is InstallmentStatus.FAILED_FINAL:
        log.warning(
            "installment %s of plan %s failed for good (%s) after %d attempt(s): the plan is %s",
            inst.id,
            plan.id,
            inst.last_error_code or "no error code",
            inst.attempts,
            "in breach" if plan.status is PlanStatus.BREACH else plan.status.value,
            extra=ids,
        )
    elif inst.status is InstallmentStatus.FAILED and inst.next_attempt_at is not None:
        log.info(
            "installment %s of plan %s failed (%s): next attempt at %s",
            inst.id,
            plan.id,
            inst.last_error_code or "no error code",
            inst.next_attempt_at.isoformat(),
            extra=ids,
        )


class _GroupCommit:
    """Records charges on their plans in one transaction per group: the charges that
    finish while a group is being saved form the next one (no timer, no added wait when
    idle). A plan has at most one charge in a group: its installments go one by one."""

    def __init__(self, charger: InstallmentCharger, max_group: int) -> None:
        self._charger = charger
        self._max = max(1, max_group)
        self._queue: list[tuple[RecordCharge, asyncio.Future[InstallmentPlan]]] = []
        self._saving: asyncio.Task[None] | None = None

    async def record(self, charge: RecordCharge) -> InstallmentPlan:
        future: asyncio.Future[InstallmentPlan] = asyncio.get_running_loop().create_future()
        self._queue.append((charge, future))
        if self._saving is None or self._saving.done():
            self._saving = asyncio.create_task(self._save_queued())
        return await future

    async def _save_queued(self) -> None:
        while self._queue:
            group, self._queue = self._queue[: self._max], self._queue[self._max :]
            try:
                plans = await self._charger.record_many([c for c, _ in group])
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), plan in zip(group, plans, strict=True):
                if not future.done():
                    future.set_result(plan)


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
        on_pass: Callable[[SchedulerStats], None] | None = None,
        storage_unreachable: Callable[[BaseException], bool] = lambda _: False,
    ) -> None:
        self._uow = uow
        self._charger = charger
        # Told what each pass did, once it ends (metrics); never stops a pass.
        self._on_pass = on_pass
        # Whether a failure means the database could not be reached (an outage).
        self._storage_unreachable = storage_unreachable
        self._clock = clock
        self.worker_id = worker_id
        self._batch = max(1, batch_size)
        self._lease = timedelta(seconds=lease_s)
        self._concurrency = max(1, concurrency)

    async def run_once(self, stop: asyncio.Event | None = None) -> SchedulerStats:
        """One pass (_pass); what it did is then told to `on_pass`, a pass that raised
        included: the charges it recorded before were made all the same."""
        stats = SchedulerStats()
        try:
            return await self._pass(stats, stop)
        finally:
            tell(self._on_pass, stats, "a scheduler pass")

    async def _pass(self, stats: SchedulerStats, stop: asyncio.Event | None) -> SchedulerStats:
        """Charge everything due now until nothing new is due: up to `concurrency`
        installments in flight; a new claim as soon as a batch's worth of room (or half
        of it) is free, so slow charges never wait for the slowest of a batch.

        Once `stop` is set (the process was told to stop) nothing more is claimed: the
        charges in flight finish and are recorded, the rest stays due for the next pass
        or worker, so a stop neither waits for the backlog nor leaves claims held."""
        seen: set[str] = set()
        recorder = _GroupCommit(self._charger, self._batch)
        running: set[asyncio.Task[InstallmentPlan | None]] = set()
        # Each plan's latest task: its next claimed installment is charged after it.
        last_of_plan: dict[str, asyncio.Task[InstallmentPlan | None]] = {}
        in_flight = 0
        room_freed = asyncio.Event()
        step = min(self._batch, self._concurrency)
        threshold = max(1, step // 2)

        def done(n: int) -> None:
            nonlocal in_flight
            in_flight -= n
            room_freed.set()

        def finished(plan_id: str, task: asyncio.Task[InstallmentPlan | None]) -> None:
            running.discard(task)
            if last_of_plan.get(plan_id) is task:
                del last_of_plan[plan_id]

        async def plan_task(
            plan: InstallmentPlan | None,
            claims: list[Claim],
            before: asyncio.Task[InstallmentPlan | None] | None,
        ) -> InstallmentPlan | None:
            # One task per plan and claim: its installments are charged one after the
            # other, after those of the plan claimed earlier in this pass.
            left = len(claims)
            try:
                if before is not None:
                    # Read after it: the plan it left was read before this claim was made.
                    await before
                    try:
                        async with self._uow() as uow:
                            plan = await uow.plans.get(claims[0].plan_id, None)
                    except Exception as exc:
                        stats.errors += left
                        self._log_failure(f"reading claimed plan {claims[0].plan_id}", exc)
                        return None
                for claim in claims:
                    if plan is None:
                        break
                    plan = await self._charge(plan, claim, stats, recorder)
                    left -= 1
                    done(1)
                return plan
            finally:
                if left:
                    done(left)

        try:
            while True:
                while self._concurrency - in_flight < threshold:
                    room_freed.clear()
                    await room_freed.wait()
                if stop is not None and stop.is_set():
                    if running:
                        log.info("stopping: finishing %d charges in flight", in_flight)
                    return stats
                if stats.postponed:
                    # No processor can take a charge now: claiming more would only
                    # postpone them too. What is due stays due for the next pass.
                    log.warning(
                        "no processor can take charges: %d postponed, claiming no more this pass",
                        stats.postponed,
                    )
                    return stats
                limit = min(self._batch, self._concurrency - in_flight)
                now = self._clock.now()
                plans: dict[str, InstallmentPlan] | None = None
                # The claimed installments' plans are read in the claim's transaction:
                # one unit of work (and one pooled connection's checkout) per claim.
                async with self._uow() as uow:
                    claims = await uow.plans.claim_due(
                        now=now, worker=self.worker_id, lease_until=now + self._lease, limit=limit
                    )
                    # A claim taken over in this pass (a charge here raised, or outlasted
                    # its lease) is left to the next pass. A new attempt of one charged
                    # here is charged: its last attempt is recorded, and it fell due again
                    # at once (a ladder step missed while the scheduler was down). Dropped,
                    # it would stay claimed and uncharged until its lease ran out.
                    fresh = [c for c in claims if not (c.reclaimed and c.installment_id in seen)]
                    by_plan: dict[str, list[Claim]] = {}
                    for c in fresh:
                        by_plan.setdefault(c.plan_id, []).append(c)
                    chained = {p: last_of_plan[p] for p in by_plan if p in last_of_plan}
                    unread = [p for p in by_plan if p not in chained]
                    try:
                        plans = await uow.plans.get_many(unread) if unread else {}
                    except Exception as exc:
                        # Claimed all the same (the commit below decides): they wait for
                        # their lease to run out, as a charge that raised does.
                        self._log_failure(f"reading {len(by_plan)} claimed plans", exc)
                    await uow.commit()
                if not fresh:
                    if not running:
                        return stats
                    # Charges still running may be followed by more due: wait, ask again.
                    await asyncio.gather(*running)
                    continue
                seen.update(c.installment_id for c in fresh)
                stats.claimed += len(fresh)
                stats.reclaimed += sum(1 for c in fresh if c.reclaimed)
                log.info(
                    "claimed %d installments (%d reclaimed)",
                    len(fresh),
                    sum(1 for c in fresh if c.reclaimed),
                )
                if plans is None:
                    stats.errors += len(fresh)
                    continue
                in_flight += len(fresh)
                for plan_id, plan_claims in by_plan.items():
                    before = chained.get(plan_id)
                    if before is None and plan_id not in plans:  # pragma: no cover
                        done(len(plan_claims))  # plans are never deleted
                        continue
                    task = asyncio.create_task(plan_task(plans.get(plan_id), plan_claims, before))
                    running.add(task)
                    last_of_plan[plan_id] = task
                    task.add_done_callback(functools.partial(finished, plan_id))
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _charge(
        self,
        plan: InstallmentPlan,
        claim: Claim,
        stats: SchedulerStats,
        recorder: _GroupCommit,
    ) -> InstallmentPlan:
        # One failing installment never stops the batch: it stays claimed until its
        # lease runs out, then it is taken up again under the same attempt number.
        # The plan returned is as stored now (recorded, else read again): the plan's next
        # claim in this pass is charged from it, and must see a cancel made meanwhile.
        try:
            result = await self._charger.pay(plan, claim.installment_id, claim.attempt)
            if result.outcome is not ChargeOutcome.UNRESOLVED:
                plan = await recorder.record(
                    RecordCharge(plan, claim.installment_id, claim.attempt, result)
                )
        except Exception as exc:
            stats.errors += 1
            self._log_failure(f"charging installment {claim.installment_id}", exc)
            return await self._read_again(plan)
        if result.outcome is ChargeOutcome.UNRESOLVED:
            stats.unresolved += 1
            return await self._read_again(plan)
        outcome: ChargeOutcome = result.outcome
        if outcome is ChargeOutcome.WITHDRAWN:
            outcome = _withdrawal_came_to(plan, claim)
        if outcome is ChargeOutcome.WITHDRAWN:
            stats.withdrawn += 1
        elif outcome is ChargeOutcome.UNRESOLVED:
            stats.unresolved += 1  # a charge found by the save's look, not settled: held
        elif outcome is ChargeOutcome.PAID:
            stats.paid += 1
        elif (status := plan.installment(claim.installment_id).status) is InstallmentStatus.PENDING:
            stats.postponed += 1
        elif status is InstallmentStatus.PROCESSING:
            stats.unresolved += 1  # held: its payment could not be cancelled yet
        else:
            stats.failed += 1
            if status is InstallmentStatus.FAILED_FINAL:
                stats.failed_final += 1
            _log_failure(plan, claim.installment_id)
        return plan

    async def _read_again(self, plan: InstallmentPlan) -> InstallmentPlan:
        try:
            async with self._uow() as uow:
                fresh = await uow.plans.get(plan.id, None)
        except Exception as exc:
            self._log_failure(f"reading plan {plan.id} again", exc)
            return plan
        return fresh or plan

    def _log_failure(self, what: str, exc: BaseException) -> None:
        # An outage beginning mid-pass fails each charge and read that follows: one
        # line each, as the pass's own failure, not a traceback each.
        log_failure(log, what, exc, self._storage_unreachable)

    async def run_forever(self, interval_s: float, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                stats = await self.run_once(stop)
                if stats.claimed:
                    log.info("scheduler pass: %s", stats.as_dict())
            except Exception as exc:
                log_failed_pass(log, "scheduler", exc, interval_s, self._storage_unreachable)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
