"""Reading contract violations back: lists, reports, complaints and retrospectives.

Operators read violations, reports and retrospectives; a merchant may report a
complaint for itself (an operator must name the merchant).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from payorch.app.analytics import window_before
from payorch.app.auth import PermissionDenied, Principal, resolve_merchant
from payorch.app.ids import new_id
from payorch.app.ports import Clock
from payorch.domain.contracts import (
    CATALOG,
    COMPLAINT_CATEGORIES,
    MAX_CONTRACT_LEN,
    ContractViolation,
    complaint_contract,
    contract,
    scrub,
)
from payorch.domain.request import Severity, merchant_id_issues
from payorch.domain.retrospective import Retrospective, build_retrospective

DEFAULT_REPORT_WINDOW = timedelta(days=14)
# What a contract id is made of (`router/timeout`): a filter of anything else is refused.
_CONTRACT_ID = re.compile(r"[A-Za-z0-9_./-]+")
MAX_COMPLAINT_LEN = 2000
# When a complaint's problem may have happened, around its report. A merchant tells of
# one after the fact, often weeks later; a year back covers that with room, and keeps
# out the times no merchant means (year 1, the Unix epoch of a zero Timestamp), which
# would sit in every listing as the oldest. Relative to the clock, as a shifted demo
# clock (PAYORCH_CLOCK_OFFSET) reads any year. Ahead: the merchant's clock running fast.
MAX_COMPLAINT_AGE = timedelta(days=365)
MAX_COMPLAINT_CLOCK_SKEW = timedelta(minutes=5)


class InvalidReportRequest(ValueError):
    """Each entry is (field, reason)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


@dataclass(frozen=True, slots=True)
class ViolationFilter:
    contract_id: str = ""
    severity: Severity | None = None
    merchant_id: str = ""
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class ViolationCursor:
    occurred_at: datetime
    violation_id: str


@dataclass(frozen=True, slots=True)
class ContractCount:
    contract_id: str
    severity: Severity
    count: int


@dataclass(frozen=True, slots=True)
class ContractReportEntry:
    contract_id: str
    severity: Severity
    owner: str
    description: str
    count: int


@dataclass(frozen=True, slots=True)
class ContractReport:
    since: datetime
    until: datetime
    entries: tuple[ContractReportEntry, ...]

    @property
    def total(self) -> int:
        return sum(e.count for e in self.entries)


@dataclass(frozen=True, slots=True)
class MerchantComplaint:
    id: str
    merchant_id: str
    # As reported: a contract id, or a category, or neither.
    contract_id: str
    category: str
    # The contract it is counted against in retrospectives.
    counted_as: str
    text: str
    occurred_at: datetime
    reported_at: datetime


class ViolationStore(Protocol):
    async def list(
        self, f: ViolationFilter, *, limit: int, after: ViolationCursor | None
    ) -> Sequence[ContractViolation]:
        """Newest first."""
        ...

    async def counts(
        self, since: datetime, until: datetime, merchant_id: str | None = None
    ) -> Sequence[ContractCount]: ...

    async def add_complaint(self, complaint: MerchantComplaint) -> None: ...

    async def complaint_counts(self, since: datetime, until: datetime) -> dict[str, int]:
        """Complaints reported in the window, by the contract they count against.

        Reported, not happened: a merchant tells of a problem after the fact, often once
        the report of the window it happened in is written. Counted by when it reached
        us, every complaint is in exactly one of the reports that tile time."""
        ...


def new_complaint_id() -> str:
    return new_id("mc")


FOR_OPERATORS = "contract violations and reports are for operators"


def _ops_only(principal: Principal) -> None:
    if not principal.is_ops:
        raise PermissionDenied(FOR_OPERATORS)


def _filter_problems(merchant_id: str, contract_id: str) -> list[tuple[str, str]]:
    """A merchant or contract no violation can hold is refused, never matched in part."""
    problems = (
        [(i.field, i.message) for i in merchant_id_issues(merchant_id)] if merchant_id else []
    )
    if len(contract_id) > MAX_CONTRACT_LEN:
        problems.append(("contract_id", f"at most {MAX_CONTRACT_LEN} characters"))
    elif contract_id and not _CONTRACT_ID.fullmatch(contract_id):
        # Contract ids are the code's (area/name): one not in today's catalog may hold
        # a retired contract's violations, and is listed; one with other characters
        # (blank, spaces, control characters) no violation can hold.
        problems.append(("contract_id", "must be letters, digits, '_', '-', '.' or '/'"))
    return problems


class ContractReports:
    def __init__(
        self,
        store: ViolationStore,
        clock: Clock,
        *,
        new_id: Callable[[], str] = new_complaint_id,
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_id = new_id

    def window(self, since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
        """[since, until): until defaults to now, since to 14 days before until (or to
        the first instant there is, 0001-01-01, when that is less than 14 days before)."""
        until = until or self._clock.now()
        since = since or window_before(until, DEFAULT_REPORT_WINDOW)
        if since >= until:
            raise InvalidReportRequest([("since", "must be before until")])
        return since, until

    async def list_violations(
        self,
        principal: Principal,
        f: ViolationFilter,
        *,
        limit: int,
        after: ViolationCursor | None,
        found: Sequence[tuple[str, str]] = (),
    ) -> Sequence[ContractViolation]:
        """`found`: what reading the request already refused, raised with these."""
        _ops_only(principal)
        problems = [*found, *_filter_problems(f.merchant_id, f.contract_id)]
        if f.since is not None and f.until is not None and f.since >= f.until:
            problems.append(("since", "must be before until"))
        if problems:
            raise InvalidReportRequest(problems)
        return await self._store.list(f, limit=limit, after=after)

    async def report(
        self,
        principal: Principal,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        merchant_id: str = "",
        found: Sequence[tuple[str, str]] = (),
    ) -> ContractReport:
        """`found`: what reading the request already refused, raised with these."""
        _ops_only(principal)
        problems = [*found, *_filter_problems(merchant_id, "")]
        if problems:
            raise InvalidReportRequest(problems)
        since, until = self.window(since, until)
        counts = await self._store.counts(since, until, merchant_id or None)
        entries = sorted(
            (
                ContractReportEntry(
                    c.contract_id,
                    c.severity,
                    contract(c.contract_id).owner,
                    contract(c.contract_id).description,
                    c.count,
                )
                for c in counts
            ),
            key=lambda e: (-e.count, e.contract_id, e.severity.value),
        )
        return ContractReport(since, until, tuple(entries))

    async def report_complaint(
        self,
        principal: Principal,
        *,
        merchant_id: str,
        contract_id: str = "",
        category: str = "",
        text: str,
        occurred_at: datetime | None = None,
        found: Sequence[tuple[str, str]] = (),
    ) -> MerchantComplaint:
        """`found`: what reading the request already refused, raised with these."""
        merchant = resolve_merchant(principal, merchant_id)
        problems = [*found, *((i.field, i.message) for i in merchant_id_issues(merchant))]
        contract_id, category = contract_id.strip(), category.strip()
        if contract_id and contract_id not in CATALOG:
            problems.append(("contract_id", "is not a contract of the catalog"))
        if category and category not in COMPLAINT_CATEGORIES:
            known = ", ".join(sorted(COMPLAINT_CATEGORIES))
            problems.append(("category", f"is not a known category ({known})"))
        if not text.strip():
            problems.append(("text", "is required: what happened"))
        elif len(text) > MAX_COMPLAINT_LEN:
            problems.append(("text", f"at most {MAX_COMPLAINT_LEN} characters"))
        now = self._clock.now()
        if occurred_at is not None and occurred_at > now + MAX_COMPLAINT_CLOCK_SKEW:
            problems.append(("occurred_at", "is in the future"))
        elif occurred_at is not None and occurred_at < now - MAX_COMPLAINT_AGE:
            problems.append(
                ("occurred_at", "is more than a year ago: a complaint tells of the last 365 days")
            )
        if problems:
            raise InvalidReportRequest(problems)
        complaint = MerchantComplaint(
            id=self._new_id(),
            merchant_id=merchant,
            contract_id=contract_id,
            category=category,
            counted_as=complaint_contract(contract_id, category),
            text=scrub(text.strip(), MAX_COMPLAINT_LEN),
            occurred_at=occurred_at or now,
            reported_at=now,
        )
        await self._store.add_complaint(complaint)
        return complaint

    async def retrospective(
        self,
        principal: Principal,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Retrospective:
        _ops_only(principal)
        return await self.build_retrospective(since=since, until=until)

    async def build_retrospective(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> Retrospective:
        """Violations against complaints over the window (no caller check: jobs use it)."""
        since, until = self.window(since, until)
        counts: dict[str, int] = {}
        for c in await self._store.counts(since, until):
            counts[c.contract_id] = counts.get(c.contract_id, 0) + c.count
        complaints = await self._store.complaint_counts(since, until)
        return build_retrospective(since, until, counts, complaints)
