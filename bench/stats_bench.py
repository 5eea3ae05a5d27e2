"""GetPaymentStats on a million attempts: load a scratch PostgreSQL database, time the query.

    python bench/stats_bench.py                       # 1,000,000 attempts, 7 runs per query
    python bench/stats_bench.py --attempts 200000 --runs 3
    python bench/stats_bench.py --explain             # EXPLAIN ANALYZE of each SQL statement too

Creates `payorch_stats_bench_<random>` on the server of --url (default: the test
server), migrates it, bulk-loads payments and attempts with COPY, runs VACUUM
ANALYZE, then times the app's PaymentAnalytics.stats (the code the GetPaymentStats
RPC runs) for several filters and drops the database (unless --keep).
Prints one line per filter: median and max wall time; docs/observability.md has
the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from payorch.adapters.clock import ManualClock  # noqa: E402
from payorch.adapters.persistence.engine import create_engine, migrate  # noqa: E402
from payorch.adapters.persistence.payment_stats import SqlAlchemyPaymentStatsReader  # noqa: E402
from payorch.app.analytics import PaymentAnalytics  # noqa: E402
from payorch.app.auth import Principal, Scope  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
MERCHANTS = [f"m_{i:03d}" for i in range(50)]
PROCESSORS = ["stripe", "sim_a", "sim_b"]
START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 30
INFRA = [
    ("soft", "processor_error", 500, "api_error"),
    ("soft", "rate_limited", 429, "invalid_request_error"),
    ("soft", "network_error", 0, ""),
    ("unknown", "timeout", 0, ""),
]
DECLINES = [("hard", "card_declined"), ("soft", "insufficient_funds"), ("hard", "expired_card")]
OPS = Principal(Scope.OPS, None, "bench")


def _dsn(url: str, database: str | None = None) -> str:
    u = make_url(url).set(drivername="postgresql")
    if database:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def generate(target_attempts: int, seed: int = 7) -> tuple[list[tuple], list[tuple]]:
    """Payments and their attempts: mostly one clean attempt, some declines, some
    infrastructure failures retried after a delay (most of them recovered)."""
    rng = random.Random(seed)
    pays: list[tuple] = []
    atts: list[tuple] = []
    n = 0
    while len(atts) < target_attempts:
        n += 1
        pid = f"pay_{n:012d}"
        merchant = rng.choice(MERCHANTS)
        created = START + timedelta(seconds=rng.random() * DAYS * 86400)
        processor = rng.choices(PROCESSORS, weights=(6, 3, 1))[0]
        t = created
        plan: list[tuple[str, str, int, str, int]] = []  # outcome, code, http, type, delay
        roll = rng.random()
        if roll < 0.84:
            plan.append(("success", "none", 200, "", 0))
        elif roll < 0.92:
            outcome, code = rng.choice(DECLINES)
            plan.append((outcome, code, 402, "card_error", 0))
        else:
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                outcome, code, http, kind = rng.choice(INFRA)
                plan.append((outcome, code, http, kind, rng.randint(200, 2500) if plan else 0))
            final = "success" if rng.random() < 0.8 else "soft"
            code = "none" if final == "success" else "processor_error"
            plan.append(
                (final, code, 200 if final == "success" else 500, "", rng.randint(200, 2500))
            )
        for i, (outcome, code, http, kind, delay) in enumerate(plan):
            latency = int(rng.lognormvariate(5.0, 0.6))
            started = t + timedelta(milliseconds=delay)
            ended = started + timedelta(milliseconds=latency)
            t = ended
            atts.append(
                (pid, merchant, 0, i + 1, "authorize", processor, f"payorch_{pid}_0_g0",
                 started, ended, latency, outcome, code, kind, "", "", http, "", "",
                 delay, "bench", "", "")
            )  # fmt: skip
        last = plan[-1][0]
        status = "succeeded" if last == "success" else "failed"
        orchestration = int((t - created).total_seconds() * 1000) + rng.randint(2, 30)
        pays.append(
            (pid, merchant, f"req_{n}", "f" * 64, "USD", rng.randint(100, 50_000), "automatic",
             False, 0, "{}", False, status, orchestration,
             "none" if status == "succeeded" else plan[-1][1], "", 1, 1, created, t, 0, None,
             None, False)
        )  # fmt: skip
    # Rows arrive in time order in real life (appended as payments happen): load them so.
    pays.sort(key=lambda r: r[17])
    atts.sort(key=lambda r: r[7])
    return pays, atts


PAYMENT_COLUMNS = [
    "id", "merchant_id", "request_id", "fingerprint", "currency", "amount_minor",
    "capture_mode", "allow_partial", "config_version", "metadata", "off_session", "status",
    "orchestration_ms", "final_error", "final_error_message", "version", "event_sequence",
    "created_at", "updated_at", "reconcile_attempts", "next_reconcile_at", "fallbacks",
    "authorize_only",
]  # fmt: skip
ATTEMPT_COLUMNS = [
    "payment_id", "merchant_id", "step_index", "number", "operation", "processor",
    "idempotency_key", "started_at", "ended_at", "latency_ms", "outcome", "error_code",
    "raw_type", "raw_code", "raw_decline_code", "raw_http_status", "raw_request_id",
    "raw_message", "delay_before_ms", "routing_reason", "retry_decision", "processor_payment_id",
]  # fmt: skip


async def load(dsn: str, pays: list[tuple], atts: list[tuple]) -> float:
    t0 = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table("payments", records=pays, columns=PAYMENT_COLUMNS)
        await conn.copy_records_to_table("attempts", records=atts, columns=ATTEMPT_COLUMNS)
        await conn.execute("VACUUM ANALYZE payments")
        await conn.execute("VACUUM ANALYZE attempts")
    finally:
        await conn.close()
    return time.perf_counter() - t0


async def explain(engine, query) -> None:  # type: ignore[no-untyped-def]
    """EXPLAIN ANALYZE every statement the reader runs for `query`."""
    from sqlalchemy import event

    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    await SqlAlchemyPaymentStatsReader(engine).stats(query)
    event.remove(engine.sync_engine, "before_cursor_execute", capture)
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SET jit = off")
        await conn.exec_driver_sql("SET random_page_cost = 1.1")
        for statement, parameters in statements:
            if statement.startswith("SET"):
                continue
            plan = await conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, BUFFERS) " + statement,
                tuple(parameters),  # type: ignore[arg-type]
            )
            print("\n".join(r[0] for r in plan))
            print("-" * 80)


CASES_ALL = "all merchants, 30 days"


def cases() -> dict[str, dict[str, object]]:
    end = START + timedelta(days=DAYS)
    return {
        CASES_ALL: dict(since=START, until=end),
        "one merchant, 30 days": dict(since=START, until=end, merchant_id=MERCHANTS[0]),
        "one processor, 30 days": dict(since=START, until=end, processor="sim_a"),
        "all merchants, 1 day": dict(since=end - timedelta(days=1), until=end),
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run(
    url: str = DEFAULT_URL,
    *,
    attempts: int = 1_000_000,
    runs: int = 7,
    keep: bool = False,
    reuse: str | None = None,
    explain_cases: str | None = None,
    echo: bool = False,
) -> dict[str, object]:
    """Load a scratch database, time every case `runs` times, drop it (unless `keep`).
    `explain_cases`: EXPLAIN ANALYZE the cases whose label contains it ("" for all)."""
    name = reuse or f"payorch_stats_bench_{uuid.uuid4().hex[:8]}"
    if not reuse:
        admin = await asyncpg.connect(_dsn(url))
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
    db_url = _dsn(url, name)
    engine = create_engine(db_url)
    results: dict[str, object] = {"database": name, "attempts": attempts, "runs": runs}
    try:
        await migrate(engine)
        if not reuse:
            t0 = time.perf_counter()
            pays, atts = generate(attempts)
            results["generate_s"] = round(time.perf_counter() - t0, 1)
            results["payments"] = len(pays)
            results["load_s"] = round(await load(db_url, pays, atts), 1)
            del pays, atts
        analytics = PaymentAnalytics(SqlAlchemyPaymentStatsReader(engine), ManualClock())
        timings: dict[str, dict[str, float]] = {}
        # The machine is shared: say how busy it was, the figures depend on it.
        busy = os.getloadavg()[0]
        results["load_average_1m_before"] = round(busy, 2)
        if echo:
            print(f"load average before timing: {busy:.2f} on {os.cpu_count()} CPUs", flush=True)
        for label, kwargs in cases().items():
            await analytics.stats(OPS, **kwargs)  # type: ignore[arg-type]  # warm the cache
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                stats = await analytics.stats(OPS, **kwargs)  # type: ignore[arg-type]
                times.append((time.perf_counter() - t0) * 1000)
            timings[label] = {
                "median_ms": round(statistics.median(times), 1),
                "p99_ms": round(_percentile(times, 0.99), 1),
                "max_ms": round(max(times), 1),
                "payments": stats.payments,
                "attempts": stats.attempts,
            }
            if echo:
                print(
                    f"{label:<28} median {statistics.median(times):7.1f} ms   max"
                    f" {max(times):7.1f} ms   ({stats.payments} payments, {stats.attempts}"
                    f" attempts; success {stats.success_rate:.1%}, recovered"
                    f" {stats.recovery_share:.1%}, p50/p95/p99 {stats.orchestration_ms})",
                    flush=True,
                )
            if explain_cases is not None and explain_cases in label:
                from payorch.app.analytics import StatsQuery

                await explain(
                    engine,
                    StatsQuery(
                        kwargs["since"],  # type: ignore[arg-type]
                        kwargs["until"],  # type: ignore[arg-type]
                        kwargs.get("merchant_id"),  # type: ignore[arg-type]
                        kwargs.get("processor"),  # type: ignore[arg-type]
                    ),
                )
        results["timings"] = timings
    finally:
        await engine.dispose()
        if not (keep or reuse):
            admin = await asyncpg.connect(_dsn(url))
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    return results


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL server (a scratch db is made)")
    ap.add_argument("--attempts", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    ap.add_argument("--reuse", metavar="NAME", help="time a database kept by --keep (no load)")
    ap.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE each statement")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--only", help="EXPLAIN only the cases whose label contains this")
    args = ap.parse_args()
    results = await run(
        args.url,
        attempts=args.attempts,
        runs=args.runs,
        keep=args.keep,
        reuse=args.reuse,
        explain_cases=(args.only or "") if args.explain else None,
        echo=not args.json,
    )
    if args.json:
        print(json.dumps(results, indent=2))
    elif not args.reuse:
        print(
            f"loaded {results['payments']} payments and {args.attempts} attempts"
            f" in {results['load_s']} s (generated in {results['generate_s']} s)"
        )
    if args.keep:
        print(f"kept database {results['database']} (--reuse {results['database']})")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
