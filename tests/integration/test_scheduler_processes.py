"""Several `payorch scheduler` processes on one PostgreSQL database charge every due
installment exactly once, also when one of them is frozen past its lease and resumed.

Counting: each process has its own in-memory simulated processor, so none of them alone
sees every charge. The simulated processors run in their shared counting mode
(PAYORCH_SIM_CHARGE_LOG): every actual charge appends one line to one file, an independent
witness at the processor boundary. The stored payments and charge rows are checked too.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from payorch.adapters.persistence.engine import create_engine
from payorch.adapters.persistence.installment_uow import SqlAlchemyInstallmentUnitOfWorkFactory
from payorch.adapters.persistence.tables import installment_charges, installments, payments
from payorch.adapters.persistence.unit_of_work import SqlAlchemyUnitOfWorkFactory
from payorch.domain.installments import InstallmentPlan, InstallmentPolicy
from payorch.domain.money import Currency, Money
from tests.conftest import cipher_for_tests

pytestmark = pytest.mark.postgres

PLANS = 1_000  # 3 installments each: 2,000 due once the clock is past the third
START = datetime(2026, 1, 1, tzinfo=UTC)
# Every worker runs 61 days after the seeded plans started: all installments due. One
# clock offset for all of them (not `--now`, which each process would turn into its own
# offset at its own start: workers started seconds apart would disagree about time by
# more than a lease, and take over each other's live claims).
CLOCK_OFFSET = str((START + timedelta(days=61) - datetime.now(UTC)).total_seconds())
RECLAIMED = re.compile(r"\((\d+) reclaimed\)")
CLAIMED = re.compile(r"claimed (\d+) installments")


async def seed(url: str, plans: int = PLANS) -> None:
    engine = create_engine(url)
    uow = SqlAlchemyInstallmentUnitOfWorkFactory(
        SqlAlchemyUnitOfWorkFactory(engine), cipher_for_tests()
    )
    try:
        for batch in range(0, plans, 250):
            async with uow() as tx:
                for n in range(batch, min(batch + 250, plans)):
                    plan = InstallmentPlan.start(
                        merchant_id="m_load",
                        request_id=f"load-{n}",
                        order_id=f"order-{n}",
                        fingerprint="f",
                        total=Money(30_000 + n, Currency("USD")),
                        token="pm_card_visa",
                        customer_id="",
                        policy=InstallmentPolicy(),
                        first_payment_id=f"pay_seed_{n}",
                        first_processor_payment_id="",
                        now=START,
                    )
                    await tx.plans.add(plan)
                await tx.commit()
    finally:
        await engine.dispose()


async def stored_counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            async def count(query) -> int:
                return int((await conn.execute(query)).scalar_one())

            i, c, p = installments, installment_charges, payments
            return {
                "paid": await count(
                    select(func.count()).select_from(i).where(i.c.status == "paid")
                ),
                "not_paid": await count(
                    select(func.count()).select_from(i).where(i.c.status != "paid")
                ),
                "charge_rows": await count(
                    select(func.count()).select_from(c).where(c.c.kind == "scheduled")
                ),
                "payments": await count(
                    select(func.count()).select_from(p).where(p.c.request_id.like("inst_%"))
                ),
                "max_attempts": await count(select(func.max(i.c.attempts))),
            }
    finally:
        await engine.dispose()


async def payment_requests(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(payments.c.id, payments.c.request_id))
            return {r.id: r.request_id for r in rows}
    finally:
        await engine.dispose()


def scheduler(
    url: str,
    log: Path,
    *,
    lease_s: float = 30.0,
    call_timeout_s: float = 1.0,
    batch: int = 50,
    latency_ms: int = 5,
    concurrency: int = 16,
    once: bool = True,
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PAYORCH_DATABASE_URL": url,
        "PAYORCH_SIM_CHARGE_LOG": str(log),
        "PAYORCH_SIMULATE": f"latency_ms={latency_ms}",
        "PAYORCH_SCHEDULER_BATCH_SIZE": str(batch),
        "PAYORCH_SCHEDULER_CONCURRENCY": str(concurrency),
        "PAYORCH_SCHEDULER_LEASE_S": str(lease_s),
        # A lease shorter than a processor call and 5 s is refused at start.
        "PAYORCH_CALL_TIMEOUT_S": str(call_timeout_s),
        "PAYORCH_LOG_LEVEL": "INFO",
        "PAYORCH_CLOCK_OFFSET": CLOCK_OFFSET,
    }
    # Logs go to a file: a full pipe nobody reads yet would stall the worker.
    stderr = (log.parent / f"worker-{time.monotonic_ns()}.log").open("w")
    args = ["scheduler", "--no-webhooks", *(["--once"] if once else [])]
    process = subprocess.Popen(
        [sys.executable, "-m", "payorch.entrypoints.cli", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
    )
    process.log_path = Path(stderr.name)  # type: ignore[attr-defined]
    return process


def log_of(process: subprocess.Popen[str]) -> str:
    return str(process.log_path.read_text())  # type: ignore[attr-defined]


def finish(process: subprocess.Popen[str], timeout: float = 120) -> dict[str, int]:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, log_of(process)[-3000:]
    return dict(json.loads(out.strip().splitlines()[-1])["scheduler"])


def wait_for_log(
    workers: list[subprocess.Popen[str]], pattern: re.Pattern[str], timeout: float
) -> bool:
    """Until a worker's log has a line matching `pattern` with its number above zero."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in workers:
            if any(int(m.group(1)) > 0 for m in pattern.finditer(log_of(w))):
                return True
        time.sleep(0.1)
    return False


def charges_per_installment(log: Path, requests: dict[str, str]) -> collections.Counter[str]:
    counted: collections.Counter[str] = collections.Counter()
    for line in log.read_text().splitlines():
        _processor, _intent, payment_id, _amount = line.split()
        request_id = requests[payment_id]  # inst_<installment id>_a<attempt>
        counted[request_id.removeprefix("inst_").rsplit("_a", 1)[0]] += 1
    return counted


def prepare(url: str) -> None:
    from tests.conftest import _truncate

    asyncio.run(_truncate(url))
    asyncio.run(seed(url))


def assert_each_installment_charged_once(url: str, log: Path) -> None:
    counted = charges_per_installment(log, asyncio.run(payment_requests(url)))
    twice = [k for k, v in counted.items() if v > 1]
    assert len(counted) == 2 * PLANS and not twice, f"{len(counted)} charged, twice: {twice[:5]}"
    assert asyncio.run(stored_counts(url)) == {
        "paid": 3 * PLANS,
        "not_paid": 0,
        "charge_rows": 2 * PLANS,
        "payments": 2 * PLANS,
        "max_attempts": 1,
    }


def test_three_scheduler_processes_charge_two_thousand_installments_exactly_once(
    postgres_database, tmp_path
):
    url = postgres_database
    prepare(url)
    log = tmp_path / "charges.log"
    started = time.monotonic()
    workers = [scheduler(url, log) for _ in range(3)]
    stats = [finish(w) for w in workers]
    elapsed = time.monotonic() - started

    assert sum(s["paid"] for s in stats) == 2 * PLANS
    assert all(s["paid"] > 0 for s in stats), f"every worker took a share: {stats}"
    assert_each_installment_charged_once(url, log)
    print(f"3 workers, {2 * PLANS} installments: {elapsed:.1f} s, {stats}")


def test_a_worker_frozen_past_its_lease_and_resumed_never_charges_twice(
    postgres_database, tmp_path
):
    url = postgres_database
    prepare(url)
    log = tmp_path / "charges.log"
    # A short lease, so the test waits little; it must still outlast one batch's
    # charges, including the 5 s a charge may wait on an identical one still in flight
    # (the shortest lease taken: the 1 s call timeout + 5 s).
    lease_s, batch = 6.0, 20
    # Its charges take 500 ms, so it is frozen holding claims it has not paid: at 5 ms
    # it could pay every claim it held (and hold the next one's rows in an open claim
    # transaction, which the others rightly skip) in the time the log is polled.
    frozen = scheduler(url, log, lease_s=lease_s, batch=batch, latency_ms=500)
    if not wait_for_log([frozen], CLAIMED, timeout=60):  # until it holds a committed claim
        frozen.kill()
        pytest.fail("the first worker never claimed anything")
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        time.sleep(lease_s + 0.5)  # real time: its lease runs out while it is frozen
        others = [scheduler(url, log, lease_s=lease_s, batch=batch) for _ in range(2)]
        assert wait_for_log(others, RECLAIMED, timeout=60), "nobody took over its claims"
    finally:
        os.kill(frozen.pid, signal.SIGCONT)  # resumes mid-charge, racing the others
    stats = [finish(w) for w in others]
    frozen_stats = finish(frozen)

    assert sum(s["reclaimed"] for s in stats) > 0
    assert frozen_stats["claimed"] > 0
    assert_each_installment_charged_once(url, log)
    print(f"frozen worker {frozen_stats}, others {stats}")
