"""The biweekly retrospectives on a real database: every complaint counted in one of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from payorch.adapters.clock import ManualClock
from payorch.adapters.persistence.contract_violations import SqlAlchemyViolationStore
from payorch.adapters.persistence.engine import create_engine, migrate
from payorch.adapters.report_files import DirectoryReportArchive
from payorch.app.auth import Principal, Scope
from payorch.app.contract_reports import ContractReports
from payorch.app.retrospective import RetrospectiveJob

START = datetime(2026, 3, 1, tzinfo=UTC)
MERCHANT = Principal(Scope.MERCHANT, "m_1", "key_1")


async def test_a_complaint_reported_after_its_window_was_written_counts_in_the_next_report(
    database_url: str, tmp_path
) -> None:
    engine = create_engine(database_url)
    await migrate(engine)
    clock = ManualClock(START)
    reports = ContractReports(SqlAlchemyViolationStore(engine), clock)
    archive = DirectoryReportArchive(tmp_path)
    job = RetrospectiveJob(reports, archive, clock)
    try:
        first = await job.run_due()  # the 14 days before START, written at START
        # Two days later a merchant tells of a checkout refused the evening before START:
        # merchants complain after the fact, once the report of that day is written.
        clock.advance(timedelta(days=2).total_seconds())
        await reports.report_complaint(
            MERCHANT,
            merchant_id="",
            category="payment_refused_by_plan",
            text="our checkout was refused all evening",
            occurred_at=START - timedelta(hours=3),
        )
        clock.advance(timedelta(days=12).total_seconds())
        second = await job.run_due()  # START to START + 14 days
    finally:
        await engine.dispose()

    assert first is not None and second is not None
    texts = [(tmp_path / Path(w).name).read_text() for w in (first, second)]
    # Counted once over the reports that tile time: in the window it reached us in.
    assert "plan/coverage" not in texts[0]
    assert (
        "  - id: plan/coverage\n    count: 0\n    external_reports: 1\n    mismatch: true\n"
        in texts[1]
    )
