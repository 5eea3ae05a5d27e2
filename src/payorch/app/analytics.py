"""Payment analytics: success, recovery by retry, retry delays, failure mix, orchestration time.

Computed by the database (the reader port aggregates in SQL): nothing here loads
payments. Merchants see their own figures only; operators any merchant's, or all.

Definitions (docs/observability.md):
- payment-level figures (counts, success, orchestration percentiles, recovery) read the
  payments created in the window [since, until); attempt-level figures (attempts,
  retry delay, failure mix) read the attempts made in it;
- a payment succeeded when money was taken: succeeded, authorized, partially succeeded
  (a split with allow_partial), or (partially) refunded since;
- recovery share: of the payments with a SOFT or UNKNOWN infrastructure failure on
  some attempt to take the money (an authorize or a capture: not a refund, a void or
  a lookup), the share that still succeeded;
- average retry delay: mean of the attempts' delay_before_ms over those with one;
- failures: attempts whose outcome is neither success nor requires_action, by outcome
  and by error code;
- a processor filter keeps the payments with an attempt on that processor, and only
  that processor's attempts (for recovery too: a failure on it, whatever came next).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from payorch.app.auth import Principal, resolve_merchant
from payorch.app.ports import Clock
from payorch.domain.classification import INFRASTRUCTURE_CODES
from payorch.domain.payment import PaymentStatus
from payorch.domain.request import merchant_id_issues
from payorch.domain.results import ErrorCode, Outcome

DEFAULT_WINDOW = timedelta(days=7)
MAX_WINDOW = timedelta(days=366)

# Statuses of payments that took the money. PARTIALLY_SUCCEEDED too: refunding part of
# one makes it PARTIALLY_REFUNDED, and a refund cannot turn a failure into a success.
SUCCEEDED = frozenset(
    {
        PaymentStatus.SUCCEEDED,
        PaymentStatus.AUTHORIZED,
        PaymentStatus.PARTIALLY_SUCCEEDED,
        PaymentStatus.REFUNDED,
        PaymentStatus.PARTIALLY_REFUNDED,
    }
)
# Attempt outcomes that are failures (REQUIRES_ACTION is the customer's turn, not one).
FAILED_OUTCOMES = frozenset({Outcome.SOFT, Outcome.HARD, Outcome.UNKNOWN})
# An attempt "hit an infrastructure failure" with one of these outcomes and codes, on
# a call that takes the money: an authorize or a capture. A refund or a void gives it
# back or releases it, and their failures neither recover nor fail the payment; a
# lookup only asks what a call did: after a failed authorize or capture that call
# counts already, and after a void, a refund or a processor's event it is about
# giving back or releasing (settlement records those lookups as "lookup" too).
RECOVERABLE_OUTCOMES = frozenset({Outcome.SOFT, Outcome.UNKNOWN})
RECOVERABLE_CODES = INFRASTRUCTURE_CODES
TAKING_MONEY = frozenset({"authorize", "capture"})
PERCENTILES = (50, 95, 99)
# The longest processor name an attempt stores.
MAX_PROCESSOR_LEN = 64


class InvalidStatsQuery(ValueError):
    """Each entry is (field, reason)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


@dataclass(frozen=True, slots=True)
class StatsQuery:
    since: datetime
    until: datetime
    merchant_id: str | None = None
    processor: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentStats:
    query: StatsQuery
    payments: int = 0
    succeeded: int = 0
    by_status: dict[PaymentStatus, int] = field(default_factory=dict)
    # Payments with an infrastructure failure on some attempt, and those of them that succeeded.
    hit_infrastructure_failure: int = 0
    recovered: int = 0
    attempts: int = 0
    retried_attempts: int = 0
    retry_delay_ms_total: int = 0
    failures_by_outcome: dict[Outcome, int] = field(default_factory=dict)
    failures_by_error_code: dict[ErrorCode, int] = field(default_factory=dict)
    # Nearest-rank percentiles of orchestration_ms: {50: ..., 95: ..., 99: ...}.
    orchestration_ms: dict[int, int] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.payments if self.payments else 0.0

    @property
    def recovery_share(self) -> float:
        if not self.hit_infrastructure_failure:
            return 0.0
        return self.recovered / self.hit_infrastructure_failure

    @property
    def average_retry_delay_ms(self) -> float:
        return self.retry_delay_ms_total / self.retried_attempts if self.retried_attempts else 0.0


class PaymentStatsReader(Protocol):
    async def stats(self, query: StatsQuery) -> PaymentStats:
        """Aggregate in the database; never load the rows."""
        ...


def window_before(until: datetime, window: timedelta) -> datetime:
    """The start of the `window` that ends at `until`, cut at the first instant there is
    (0001-01-01) when it would begin before it: as much of the window as exists."""
    try:
        return until - window
    except OverflowError:
        return datetime.min.replace(tzinfo=until.tzinfo)


def nearest_rank(p: int, n: int) -> int:
    """1-based rank of the p-th percentile among n sorted values: ceil(p * n / 100)."""
    return max(1, (p * n + 99) // 100)


def _processor_problems(processor: str) -> list[tuple[str, str]]:
    """What makes a processor filter name no processor there can be. A name no attempt
    holds (one removed from PAYORCH_PROCESSORS, whose history stays) answers zeros."""
    name = processor.strip()
    if processor and not name:
        # Blank is not empty: it would widen the figures to every processor.
        return [("processor", "is blank: name a processor, or none for all")]
    if len(name) > MAX_PROCESSOR_LEN or not name.isprintable():
        return [("processor", f"at most {MAX_PROCESSOR_LEN} printable characters")]
    if "," in name:
        # PAYORCH_PROCESSORS separates names with commas: none holds one.
        return [("processor", "one processor: a name holds no comma")]
    return []


class PaymentAnalytics:
    def __init__(self, reader: PaymentStatsReader, clock: Clock) -> None:
        self._reader = reader
        self._clock = clock

    async def stats(
        self,
        principal: Principal,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        merchant_id: str = "",
        processor: str = "",
        found: Sequence[tuple[str, str]] = (),
    ) -> PaymentStats:
        """A merchant's key is held to its merchant (another one is PermissionDenied);
        an operator names one, or none for every merchant. A merchant or processor that
        none can be (too long, not an id, blank, a list) is refused, never matched in
        part or widened to all; one no payment has answers zeros. `found`:
        what reading the request already refused, raised with these."""
        merchant = resolve_merchant(principal, merchant_id)
        named = principal.is_ops and merchant
        problems = list(found)
        if named:
            problems += [(i.field, i.message) for i in merchant_id_issues(merchant)]
        elif principal.is_ops and merchant_id:
            # Blank is not empty: it would widen the figures to every merchant.
            problems.append(("merchant_id", "is blank: name a merchant, or none for all"))
        problems += _processor_problems(processor)
        processor = processor.strip()
        until = until or self._clock.now()
        since = since or window_before(until, DEFAULT_WINDOW)
        if since >= until:
            problems.append(("since", "must be before until"))
        elif until - since > MAX_WINDOW:
            problems.append(("since", f"the window is at most {MAX_WINDOW.days} days"))
        if problems:
            raise InvalidStatsQuery(problems)
        query = StatsQuery(since, until, merchant or None, processor or None)
        return await self._reader.stats(query)
