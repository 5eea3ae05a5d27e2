"""The biweekly retrospective job on a manual clock: due, written, not repeated, resumed."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from payorch.adapters.clock import ManualClock
from payorch.adapters.payment_metrics import PaymentMetrics
from payorch.adapters.report_files import DirectoryReportArchive
from payorch.app.contract_reports import ContractCount, ContractReports
from payorch.app.retrospective import RetrospectiveJob
from payorch.domain.request import Severity
from payorch.domain.retrospective import Escalation
from payorch.observability_wiring import ObservabilityOptions, build_observability
from payorch.settings import Settings

START = datetime(2026, 3, 1, tzinfo=UTC)


class SeedStore:
    """The seed's example, whatever the window: 932 timeouts and 41 coverage misses."""

    def __init__(self) -> None:
        self.windows: list[tuple[datetime, datetime]] = []

    async def counts(self, since, until, merchant_id=None):
        self.windows.append((since, until))
        return [
            ContractCount("router/timeout", Severity.WARNING, 900),
            ContractCount("router/timeout", Severity.ERROR, 32),
            ContractCount("plan/coverage", Severity.ERROR, 41),
        ]

    async def complaint_counts(self, since, until):
        return {"router/timeout": 8, "plan/coverage": 17}


def job(tmp_path, clock, store):
    archive = DirectoryReportArchive(tmp_path / "retros")
    return RetrospectiveJob(ContractReports(store, clock), archive, clock), archive


async def test_the_first_report_is_written_at_once_with_the_seed_figures(tmp_path):
    clock, store = ManualClock(START), SeedStore()
    j, archive = job(tmp_path, clock, store)

    where = await j.run_due()

    assert where is not None and where.endswith("retrospective-20260301T000000Z.yaml")
    text = (tmp_path / "retros" / "retrospective-20260301T000000Z.yaml").read_text()
    assert (
        "  - id: router/timeout\n    count: 932\n    external_reports: 8\n    mismatch: false\n"
        in text
    )
    assert (
        "  - id: plan/coverage\n    count: 41\n    external_reports: 17\n    mismatch: true\n"
        in text
    )
    assert store.windows == [(START - timedelta(days=14), START)]
    assert archive.latest() == START


async def test_the_next_report_waits_fourteen_days(tmp_path):
    clock, store = ManualClock(START), SeedStore()
    j, _ = job(tmp_path, clock, store)
    await j.run_due()

    clock.advance(13 * 86400 + 86399)
    assert await j.run_due() is None
    clock.advance(1)
    assert (await j.run_due() or "").endswith("retrospective-20260315T000000Z.yaml")
    assert len(list((tmp_path / "retros").glob("*.yaml"))) == 2


async def test_a_restarted_job_goes_on_from_the_last_report_written(tmp_path):
    clock, store = ManualClock(START), SeedStore()
    first, _ = job(tmp_path, clock, store)
    await first.run_due()

    clock.advance(7 * 86400)
    again, _ = job(tmp_path, clock, store)  # a new process, the same directory
    assert again.next_due() == START + timedelta(days=14)
    assert await again.run_due() is None


async def test_reports_tile_time_when_polls_come_late_after_a_restart(tmp_path):
    clock, store = ManualClock(START), SeedStore()
    first, _ = job(tmp_path, clock, store)
    await first.run_due()

    clock.advance(2 * 86400 + 40 * 60)  # restarted at 00:40, polling hourly from then
    again, _ = job(tmp_path, clock, store)
    for _ in range(24 * 13):
        await again.run_due()
        clock.advance(3600)

    assert store.windows == [
        (START - timedelta(days=14), START),
        (START, START + timedelta(days=14)),
    ]


async def test_a_job_down_across_several_due_dates_writes_one_report_per_period_missed(tmp_path):
    clock, store = ManualClock(START), SeedStore()
    j, archive = job(tmp_path, clock, store)
    await j.run_due()

    clock.advance(30 * 86400)  # down for 30 days: two periods due
    where = await j.run_due()

    assert where is not None and where.endswith("retrospective-20260329T000000Z.yaml")
    assert store.windows[1:] == [
        (START, START + timedelta(days=14)),
        (START + timedelta(days=14), START + timedelta(days=28)),
    ]
    assert archive.latest() == START + timedelta(days=28)
    assert await j.run_due() is None


async def test_reports_tile_time_when_the_first_one_is_written_within_a_second(tmp_path):
    # A real clock is never on a whole second, and a report is named by its end to the
    # second: the next one must start where the first ended, or the violations of that
    # fraction of a second are counted in both.
    clock, store = ManualClock(START + timedelta(milliseconds=750)), SeedStore()
    j, archive = job(tmp_path, clock, store)
    await j.run_due()

    clock.advance(14 * 86400)
    await j.run_due()

    (_, first_until), (second_since, _) = store.windows
    assert second_since == first_until
    assert archive.latest() == first_until + timedelta(days=14)


def test_the_archive_refuses_a_window_end_its_file_name_cannot_keep(tmp_path):
    archive = DirectoryReportArchive(tmp_path / "retros")
    with pytest.raises(ValueError, match="whole second"):
        archive.write(START + timedelta(microseconds=1), "violations: []\n")
    assert archive.latest() is None


def test_a_report_reaches_the_disk_before_its_name_says_it_was_written(tmp_path, monkeypatch):
    # The name is the archive's memory (`latest`): renamed before its bytes were on
    # disk, a crash could leave an empty report under it, taken as written for good.
    events: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        events.append(("fsync", "directory" if stat.S_ISDIR(st.st_mode) else st.st_ino))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("rename", os.stat(src).st_ino))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    archive = DirectoryReportArchive(tmp_path / "retros")

    where = archive.write(START, "violations: []\n")

    report = os.stat(where).st_ino
    assert events == [("fsync", report), ("rename", report), ("fsync", "directory")]
    assert [p.name for p in (tmp_path / "retros").iterdir()] == [Path(where).name]
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o644
    assert archive.latest() == START


async def test_each_escalation_of_a_report_written_pages_its_owner(tmp_path, caplog):
    """An escalation was a line in a file and a count in an INFO line: nobody was asked
    to look. Each is now a warning naming the owner and the contract, and is counted
    (payorch_retrospective_escalations_total{contract, owner}) for an alert to route."""
    clock, store = ManualClock(START), SeedStore()
    told = []
    j = RetrospectiveJob(
        ContractReports(store, clock),
        DirectoryReportArchive(tmp_path / "retros"),
        clock,
        on_escalation=told.append,
    )

    with caplog.at_level("WARNING", logger="payorch.retrospective"):
        await j.run_due()

    assert [(x.contract_id, x.owner) for x in told] == [("plan/coverage", "plans")]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("escalation to plans: contract plan/coverage, 17 merchant report(s)")
    assert "retrospective-20260301T000000Z.yaml" in warning

    clock.advance(86400)
    await j.run_due()  # nothing due: nothing told again
    assert len(told) == 1


async def test_an_escalation_counter_that_fails_leaves_the_report_written(tmp_path, caplog):
    clock, store = ManualClock(START), SeedStore()

    def broken(_):
        raise RuntimeError("registry gone")

    archive = DirectoryReportArchive(tmp_path / "retros")
    j = RetrospectiveJob(ContractReports(store, clock), archive, clock, on_escalation=broken)

    assert await j.run_due() is not None
    assert archive.latest() == START
    assert "counting an escalation failed" in caplog.text


def test_escalations_are_counted_by_contract_and_owner(tmp_path):
    """As the server wires the job (observability_wiring): the counter an alert routes
    to the owner on."""
    registry = CollectorRegistry()
    settings = Settings(retrospective_dir=str(tmp_path))
    app = build_observability(
        settings,
        ManualClock(),
        engine=None,  # type: ignore[arg-type]
        options=ObservabilityOptions(metrics=PaymentMetrics(registry)),
    )
    assert app.retrospective is not None
    app.retrospective._on_escalation(Escalation("plan/coverage", "plans", "17 reports"))  # type: ignore[misc]

    name = "payorch_retrospective_escalations_total"
    labels = {"contract": "plan/coverage", "owner": "plans"}
    assert registry.get_sample_value(name, labels) == 1.0
