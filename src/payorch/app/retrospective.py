"""The biweekly retrospective as a job: when one is due, write the report for the last window.

Due when no report was written yet, or the newest one ended at least `every` ago;
the archive remembers what was written, so a restart neither skips nor repeats one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from payorch.app.contract_reports import DEFAULT_REPORT_WINDOW, ContractReports
from payorch.app.observability import tell
from payorch.app.ports import Clock
from payorch.domain.retrospective import Escalation

log = logging.getLogger("payorch.retrospective")


class ReportArchive(Protocol):
    def latest(self) -> datetime | None:
        """End of the window of the newest report written, if any."""
        ...

    def write(self, until: datetime, text: str) -> str:
        """Store the report of the window ending at `until`, a whole second (a report is
        named, and `latest` read back, to the second); where it went."""
        ...


class RetrospectiveJob:
    def __init__(
        self,
        reports: ContractReports,
        archive: ReportArchive,
        clock: Clock,
        *,
        every: timedelta = DEFAULT_REPORT_WINDOW,
        window: timedelta = DEFAULT_REPORT_WINDOW,
        on_escalation: Callable[[Escalation], None] | None = None,
    ) -> None:
        self._reports = reports
        # Told of each escalation of each report written (metrics); never stops the job.
        self._on_escalation = on_escalation
        self._archive = archive
        self._clock = clock
        self._every = every
        self._window = window

    def next_due(self) -> datetime | None:
        """None: due now (nothing written yet)."""
        latest = self._archive.latest()
        return None if latest is None else latest + self._every

    async def run_due(self) -> str | None:
        """Write the reports that are due; where the last one went, or None.

        The first covers the `window` before now. Each later one starts where the one
        before it ended and ends `every` after that, so the reports tile time: a poll
        that comes late, a restart, or days down across a due date leave no gap (after
        a long outage one report is written for each period missed). The first ends on
        the second before now: the archive knows a report's end to the second, and a
        fraction cut off there would begin the next report before this one ended."""
        now = self._clock.now()
        latest = self._archive.latest()
        if latest is None:
            until = now.replace(microsecond=0)
            return await self._write(until - self._window, until)
        where = None
        while latest + self._every <= now:
            where = await self._write(latest, latest + self._every)
            latest += self._every
        return where

    async def _write(self, since: datetime, until: datetime) -> str:
        report = await self._reports.build_retrospective(since=since, until=until)
        where = self._archive.write(until, report.to_yaml())
        log.info(
            "retrospective of %s to %s written to %s: %d contract(s), %d escalation(s)",
            since.isoformat(),
            until.isoformat(),
            where,
            len(report.entries),
            len(report.escalations),
        )
        # An escalation asks its owner to look: said where owners are paged from (a
        # warning each, and the metric alerts fire on), not only inside the file.
        for x in report.escalations:
            log.warning(
                "escalation to %s: contract %s, %s (retrospective of %s to %s, %s)",
                x.owner,
                x.contract_id,
                x.reason,
                since.isoformat(),
                until.isoformat(),
                where,
            )
            tell(self._on_escalation, x, "an escalation")
        return where

    async def run_forever(self, poll_s: float = 3600.0) -> None:
        while True:
            try:
                await self.run_due()
            except Exception:
                log.exception("retrospective failed; trying again in %.0f s", poll_s)
            await self._clock.sleep(poll_s)
