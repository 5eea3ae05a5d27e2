"""The payment writers' counters on /metrics: read at scrape time, summed per database."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from payorch.adapters.metrics import PaymentWriteCollector


class FakeWriter:
    def __init__(self, database: str, batches: int, writes: int, stalls: int = 0):
        self.database = database
        self.batches = batches
        self.writes = writes
        self.stalls = stalls


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
