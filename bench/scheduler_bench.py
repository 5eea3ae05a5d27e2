"""The installment scheduler on 10,000 due installments: one worker, then two.

    python bench/scheduler_bench.py                          # 10,000 due; 1 worker, then 2
    python bench/scheduler_bench.py --installments 2000 --workers 1
    python bench/scheduler_bench.py --concurrency 500 --batch-size 500 --json

Per run: creates `payorch_sched_bench_<random>` on the server of --url (default: the
test server), migrates it, inserts one plan per due installment the way the real code
stores them (InstallmentPlan.start: the first installment paid at checkout, the second
due, the third not yet), then starts the workers as production does
(`payorch scheduler --once --no-webhooks`, simulated processor with --latency-ms) and
times them until all exit. Then it counts rows: every due installment paid, one
payment and one charge row per installment, and one line per installment in the
simulated processors' shared charge log (PAYORCH_SIM_CHARGE_LOG, the witness at the
processor boundary: no double charge). The database is dropped after (WITH FORCE).

docs/performance.md has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from payorch.adapters.persistence.engine import create_engine, migrate  # noqa: E402
from payorch.adapters.persistence.installments import (  # noqa: E402
    _charge_row,
    _installment_row,
    _plan_row,
    event_payload,
)
from payorch.adapters.persistence.tables import (  # noqa: E402
    events,
    installment_charges,
    installment_plans,
    installments,
)
from payorch.adapters.secret_cipher import new_key_text  # noqa: E402
from payorch.domain.installments import InstallmentPlan, InstallmentPolicy  # noqa: E402
from payorch.domain.money import Currency, Money  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
MERCHANT = "m_sched_bench"
START = datetime(2026, 1, 1, tzinfo=UTC)
# Workers act 31 days after the plans started: installment 2 of every plan is due
# (interval 30 days), installment 3 is not.
RUN_AT = START + timedelta(days=31)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _dsn(url: str, database: str | None = None) -> str:
    u = make_url(url).set(drivername="postgresql")
    if database:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def plans(count: int) -> list[InstallmentPlan]:
    """`count` plans as the InstallmentService creates them after a paid first charge."""
    out = []
    for n in range(count):
        plan = InstallmentPlan.start(
            merchant_id=MERCHANT,
            request_id=f"bench-{n}",
            order_id=f"order-{n}",
            fingerprint="f" * 64,
            total=Money(30_000 + n, Currency("USD")),
            token="pm_card_visa",
            customer_id=f"cus_{n % 997}",
            policy=InstallmentPolicy(count=3, interval_days=30),
            first_payment_id=f"pay_checkout_{n}",
            first_processor_payment_id=f"sim_checkout_{n}",
            now=START,
        )
        out.append(plan)
    return out


async def seed(url: str, count: int) -> float:
    """Insert the plans with multi-row INSERTs (the repository's row shapes)."""
    t0 = time.perf_counter()
    engine = create_engine(url)
    try:
        await migrate(engine)
        all_plans = plans(count)
        for lo in range(0, count, 2_000):
            chunk = all_plans[lo : lo + 2_000]
            async with engine.begin() as conn:
                await conn.execute(installment_plans.insert(), [_plan_row(p) for p in chunk])
                await conn.execute(
                    installments.insert(),
                    [_installment_row(p, i) for p in chunk for i in p.installments],
                )
                await conn.execute(
                    installment_charges.insert(),
                    [_charge_row(i, c) for p in chunk for i in p.installments for c in i.charges],
                )
                await conn.execute(
                    events.insert(),
                    [
                        {
                            "id": f"evt_{uuid.uuid4().hex}",
                            "payment_id": p.id,
                            "merchant_id": p.merchant_id,
                            "sequence": e.sequence,
                            "name": e.name,
                            "payload": event_payload(e),
                            "occurred_at": p.updated_at,
                            # Published already: the benchmark runs without webhooks.
                            "published_at": p.updated_at,
                        }
                        for p in chunk
                        for e in p.pending_events
                    ],
                )
        async with engine.connect() as conn:
            await conn.exec_driver_sql("COMMIT")
            for table in ("installment_plans", "installments", "installment_charges", "events"):
                await conn.exec_driver_sql(f"VACUUM ANALYZE {table}")
    finally:
        await engine.dispose()
    return time.perf_counter() - t0


async def verify(url: str, due: int, charge_lines: list[str]) -> dict[str, Any]:
    """Count what the workers left: every due installment paid once, nothing else."""
    conn = await asyncpg.connect(_dsn(url))
    try:
        row = await conn.fetchrow(
            """
            select
              (select count(*) from installments where sequence = 2 and status = 'paid')
                as paid,
              (select count(*) from installments where sequence = 2 and status <> 'paid')
                as not_paid,
              (select count(*) from installments where sequence = 3 and status <> 'pending')
                as not_due_touched,
              (select max(attempts) from installments where sequence = 2) as max_attempts,
              (select count(*) from installment_charges where kind = 'scheduled')
                as charge_rows,
              (select count(*) from payments where request_id like 'inst_%') as payments,
              (select count(*) from payments where request_id like 'inst_%'
                 and status = 'succeeded') as payments_succeeded,
              (select count(distinct (metadata::jsonb ->> 'installment_id')) from payments
                 where request_id like 'inst_%') as installments_with_payment,
              (select count(*) from installments i join payments p on p.id = i.payment_id
                 where i.sequence = 2) as paid_with_their_payment,
              (select extract(epoch from max(p.updated_at) - min(p.created_at))
                 from payments p where request_id like 'inst_%') as charging_window_s
            """
        )
    finally:
        await conn.close()
    lines = charge_lines
    counts = {
        k: (float(v or 0) if k == "charging_window_s" else int(v or 0)) for k, v in row.items()
    }
    counts["processor_charges"] = len(lines)
    counts["processor_distinct_keys"] = len(set(lines))
    counts["charged_exactly_once"] = (
        counts["paid"] == due
        and counts["not_paid"] == 0
        and counts["not_due_touched"] == 0
        and counts["max_attempts"] == 1
        and counts["charge_rows"] == due
        and counts["payments"] == due
        and counts["payments_succeeded"] == due
        and counts["installments_with_payment"] == due
        and counts["paid_with_their_payment"] == due
        and counts["processor_charges"] == due
    )
    return counts


def _machine_busy() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def _postgres_ticks() -> dict[tuple[str, str], int]:
    """CPU ticks of every postgres process on this machine, by (pid, start time)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "postgres":
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[(proc.name, fields[19])] = int(fields[11]) + int(fields[12])
    return out


class PostgresCpu:
    """CPU of the (local) PostgreSQL server's processes during a run, sampled every
    0.2 s so that backends which come and go are counted (up to their last sample)."""

    def __init__(self) -> None:
        self._first = _postgres_ticks()
        self._last = dict(self._first)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self._last.update(_postgres_ticks())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._last.update(_postgres_ticks())
        ticks = sum(v - self._first.get(k, 0) for k, v in self._last.items())
        return ticks / CLK_TCK


def start_workers(
    url: str,
    workers: int,
    *,
    latency_ms: float,
    concurrency: int | None,
    batch_size: int | None,
    charge_log: Path,
    workdir: Path,
    profile: Path | None = None,
) -> list[tuple[subprocess.Popen[str], Path]]:
    offset = (RUN_AT - datetime.now(UTC)).total_seconds()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
        ),
        "PAYORCH_DATABASE_URL": url,
        # One key for every worker (PostgreSQL needs one; docs/security.md).
        "PAYORCH_SECRETS_KEY": os.environ.get("PAYORCH_SECRETS_KEY") or new_key_text(),
        "PAYORCH_SIMULATE": f"latency_ms={latency_ms:g}",
        "PAYORCH_SIM_CHARGE_LOG": str(charge_log),
        # One offset for every worker: leases compare the times they write.
        "PAYORCH_CLOCK_OFFSET": f"{offset:.3f}",
        "PAYORCH_LOG_LEVEL": "WARNING",
    }
    if concurrency is not None:
        env["PAYORCH_SCHEDULER_CONCURRENCY"] = str(concurrency)
    if batch_size is not None:
        env["PAYORCH_SCHEDULER_BATCH_SIZE"] = str(batch_size)
    procs = []
    for w in range(workers):
        log = workdir / f"worker-{w}.log"
        spy: list[str] = []
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            out = profile / f"scheduler-{workers}w-{w}.speedscope.json"
            exe = str(Path(sys.executable).parent / "py-spy")
            spy = [exe, "record", "--rate", "200", "--format", "speedscope", "-o", str(out), "--"]
        with log.open("w") as stderr:
            procs.append(
                (
                    subprocess.Popen(
                        [
                            *spy,
                            sys.executable,
                            "-m",
                            "payorch.entrypoints.cli",
                            "scheduler",
                            "--once",
                            "--no-webhooks",
                        ],
                        stdout=subprocess.PIPE,
                        stderr=stderr,
                        text=True,
                        env=env,
                    ),
                    log,
                )
            )
    return procs


def measure(
    admin_url: str,
    *,
    installments_due: int,
    workers: int,
    latency_ms: float = 100.0,
    concurrency: int | None = None,
    batch_size: int | None = None,
    timeout_s: float = 600.0,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One run on a fresh database: seed, run `workers` scheduler processes, verify, drop."""
    name = f"payorch_sched_bench_{uuid.uuid4().hex[:8]}"
    url = _dsn(admin_url, name)

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(_dsn(admin_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        with tempfile.TemporaryDirectory(prefix="payorch-sched-bench-") as tmp:
            workdir = Path(tmp)
            charge_log = workdir / "charges.log"
            charge_log.touch()
            seed_s = asyncio.run(seed(url, installments_due))
            children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            busy0 = _machine_busy()
            pg = PostgresCpu()
            t0 = time.perf_counter()
            procs = start_workers(
                url,
                workers,
                latency_ms=latency_ms,
                concurrency=concurrency,
                batch_size=batch_size,
                charge_log=charge_log,
                workdir=workdir,
                profile=profile,
            )
            reports: list[dict[str, Any]] = []
            failures: list[str] = []
            try:
                for proc, log in procs:
                    out, _ = proc.communicate(timeout=timeout_s)
                    # The worker's report is its last JSON line (under --profile, py-spy
                    # prints its own lines to the same stdout after it).
                    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
                    if proc.returncode == 0 and lines:
                        reports.append(json.loads(lines[-1])["scheduler"])
                    else:
                        tail = log.read_text(errors="replace")[-1500:]
                        failures.append(f"worker exit {proc.returncode}: {tail}")
            finally:
                for proc, _ in procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            wall = time.perf_counter() - t0
            pg_cpu = pg.stop()
            busy1 = _machine_busy()
            children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            worker_cpu = (children1.ru_utime - children0.ru_utime) + (
                children1.ru_stime - children0.ru_stime
            )
            check = asyncio.run(verify(url, installments_due, charge_log.read_text().splitlines()))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * (os.cpu_count() or 1)
    totals = {
        k: sum(r.get(k, 0) for r in reports)
        for k in ("claimed", "reclaimed", "paid", "failed", "unresolved", "errors")
    }
    window = check["charging_window_s"]
    result: dict[str, Any] = {
        "status": "ok" if not failures and check["charged_exactly_once"] else "failed",
        "installments": installments_due,
        "workers": workers,
        "processor_latency_ms": latency_ms,
        "concurrency": concurrency,
        "batch_size": batch_size,
        "seed_s": round(seed_s, 2),
        "wall_s": round(wall, 2),
        "installments_per_s": round(installments_due / wall, 1),
        # First payment created to last payment finished: the wall time without the
        # workers' start-up (imports, connecting).
        "charging_window_s": round(window, 2),
        "charging_installments_per_s": round(installments_due / window, 1) if window else None,
        "worker_cpu_s": round(worker_cpu, 2),
        "worker_cpu_ms_per_installment": round(1000 * worker_cpu / installments_due, 3),
        "postgres_cpu_s": round(pg_cpu, 2),
        "postgres_cpu_ms_per_installment": round(1000 * pg_cpu / installments_due, 3),
        # Every core on the machine (workers, PostgreSQL, anything else) during the run.
        "machine_busy_cores": round(busy, 2),
        "workers_report": reports,
        "totals": totals,
        "check": check,
    }
    if failures:
        result["error"] = failures[0]
    elif not check["charged_exactly_once"]:
        result["error"] = f"not charged exactly once: {check}"
    return result


def compare(one: dict[str, Any], two: dict[str, Any]) -> dict[str, Any]:
    """Two workers against one: the ratio of their rates (wall, and without start-up)."""

    def ratio(key: str) -> float | None:
        a, b = one.get(key), two.get(key)
        return round(b / a, 3) if a and b else None

    return {
        "ratio": ratio("installments_per_s"),
        "charging_ratio": ratio("charging_installments_per_s"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL server (scratch dbs are made)")
    ap.add_argument("--installments", type=int, default=10_000, help="due installments")
    ap.add_argument(
        "--workers", type=int, action="append", help="worker count per run (default: 1 and 2)"
    )
    ap.add_argument("--latency-ms", type=float, default=100.0, help="simulated processor")
    ap.add_argument("--concurrency", type=int, help="PAYORCH_SCHEDULER_CONCURRENCY")
    ap.add_argument("--batch-size", type=int, help="PAYORCH_SCHEDULER_BATCH_SIZE")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--profile", type=Path, metavar="DIR", help="py-spy record each worker")
    args = ap.parse_args()
    runs = {}
    for workers in args.workers or [1, 2]:
        r = measure(
            args.url,
            installments_due=args.installments,
            workers=workers,
            latency_ms=args.latency_ms,
            concurrency=args.concurrency,
            batch_size=args.batch_size,
            profile=args.profile,
        )
        runs[str(workers)] = r
        if not args.json:
            print(
                f"{workers} worker(s): {r['status']}  {r['installments']} installments in "
                f"{r['wall_s']} s ({r['installments_per_s']}/s; charging window "
                f"{r['charging_window_s']} s, {r['charging_installments_per_s']}/s)  worker CPU "
                f"{r['worker_cpu_s']} s ({r['worker_cpu_ms_per_installment']} ms/installment), "
                f"PostgreSQL CPU {r['postgres_cpu_s']} s "
                f"({r['postgres_cpu_ms_per_installment']} ms/installment), "
                f"machine {r['machine_busy_cores']} cores busy  {r.get('error', '')}",
                flush=True,
            )
    out: dict[str, Any] = {"runs": runs}
    if "1" in runs and "2" in runs:
        out["two_vs_one"] = compare(runs["1"], runs["2"])
    if args.json:
        print(json.dumps(out, indent=2))
    elif "two_vs_one" in out:
        print(f"two workers vs one: {out['two_vs_one']}")
    return 0 if all(r["status"] == "ok" for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
