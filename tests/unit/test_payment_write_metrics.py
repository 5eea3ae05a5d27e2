"""The payment writers' counters on /metrics: read at scrape time, summed per database."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from payorch.adapters.metrics import PaymentWriteCollector
from payorch.adapters.persistence.payment_writes import CommitTimes


class FakeWriter:
    def __init__(self, database: str, batches: int, writes: int, stalls: int = 0):
        self.database = database
        self.batches = batches
        self.writes = writes
        self.stalls = stalls
        self.commit_times = CommitTimes()


def registry_with(collector: PaymentWriteCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def value(registry: CollectorRegistry, name: str, database: str) -> float | None:
    return registry.get_sample_value(name, {"database": database})


def test_counters_are_read_when_scraped_and_summed_per_database():
    collector = PaymentWriteCollector()
    registry = registry_with(collector)
    pg_a, pg_b = FakeWriter("postgresql", 3, 40, stalls=1), FakeWriter("postgresql", 2, 6, 0)
    lite = FakeWriter("sqlite", 5, 9)
    for w in (pg_a, pg_b, lite):
        collector.track(w)
    assert value(registry, "payorch_payment_write_batches_total", "postgresql") == 5
    assert value(registry, "payorch_payment_writes_total", "postgresql") == 46
    assert value(registry, "payorch_payment_write_stalls_total", "postgresql") == 1
    # The SQLite writer has no stall threshold: its stalls stay 0.
    assert value(registry, "payorch_payment_writes_total", "sqlite") == 9
    assert value(registry, "payorch_payment_write_stalls_total", "sqlite") == 0
    # A later scrape sees the counters as they are then.
    lite.writes += 2
    lite.batches += 1
    assert value(registry, "payorch_payment_writes_total", "sqlite") == 11
    assert value(registry, "payorch_payment_write_batches_total", "sqlite") == 6


def test_a_writer_that_is_gone_is_no_longer_counted():
    collector = PaymentWriteCollector()
    registry = registry_with(collector)
    collector.track(FakeWriter("sqlite", 1, 2))
    gc.collect()
    assert value(registry, "payorch_payment_writes_total", "sqlite") is None
    kept = FakeWriter("sqlite", 1, 2)
    collector.track(kept)
    assert value(registry, "payorch_payment_writes_total", "sqlite") == 2


def test_commit_times_fall_in_the_first_bucket_whose_bound_holds_them():
    times = CommitTimes()
    for seconds in (0.0001, 0.0005, 0.0006, 0.3, 5.0, 12.0):
        times.observe(seconds)
    by_bound = dict(zip((*times.bounds, float("inf")), times.counts, strict=True))
    assert by_bound[0.0005] == 2  # an upper bound holds the value equal to it
    assert by_bound[0.001] == 1
    assert by_bound[0.5] == 1
    assert by_bound[5.0] == 1
    assert by_bound[float("inf")] == 1
    assert sum(times.counts) == 6
    assert abs(times.sum_s - 17.3012) < 1e-9


def test_commit_times_are_one_histogram_per_database_with_cumulative_buckets():
    collector = PaymentWriteCollector()
    registry = registry_with(collector)
    pg_a, pg_b, lite = (
        FakeWriter("postgresql", 2, 2),
        FakeWriter("postgresql", 1, 1),
        FakeWriter("sqlite", 3, 3),
    )
    for w in (pg_a, pg_b, lite):
        collector.track(w)
    pg_a.commit_times.observe(0.002)
    pg_a.commit_times.observe(0.2)
    pg_b.commit_times.observe(0.0003)
    for seconds in (0.0004, 0.004, 1.7):
        lite.commit_times.observe(seconds)

    def bucket(database: str, le: str) -> float | None:
        return registry.get_sample_value(
            "payorch_payment_write_commit_seconds_bucket", {"database": database, "le": le}
        )

    assert bucket("postgresql", "0.0005") == 1
    assert bucket("postgresql", "0.0025") == 2
    assert bucket("postgresql", "0.1") == 2
    assert bucket("postgresql", "0.25") == 3
    assert bucket("postgresql", "+Inf") == 3
    assert value(registry, "payorch_payment_write_commit_seconds_count", "postgresql") == 3
    total = value(registry, "payorch_payment_write_commit_seconds_sum", "postgresql")
    assert total is not None and abs(total - 0.2023) < 1e-9
    # The slow SQLite commit shows only from the 2.5 s bucket on.
    assert bucket("sqlite", "1.0") == 2
    assert bucket("sqlite", "2.5") == 3
    assert value(registry, "payorch_payment_write_commit_seconds_count", "sqlite") == 3
