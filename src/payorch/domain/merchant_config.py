"""A merchant's payment configuration: methods, limits, processors, retries, splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from payorch.domain.card_data import quoted
from payorch.domain.installments import (
    MAX_COUNT,
    MAX_DUNNING_DAY,
    MAX_INTERVAL_DAYS,
    MAX_LADDER_STEPS,
)
from payorch.domain.money import EXPONENTS
from payorch.domain.payment import MethodType
from payorch.domain.retry import RetryPolicy, retry_policy_problems

# Names the caller sent are quoted back in problems: a few, each cut short, with no
# card number (a 200 KB processor name made an 800 KB answer the transport refused).
MAX_QUOTED = 3
MAX_QUOTED_LEN = 32
# Each method type at most once: a config listing more is refused whatever the rest
# says, and what comes after them is not read (4 bytes of proto a method).
MAX_METHODS = len(MethodType)


def _quoted(names: list[str]) -> str:
    shown = ", ".join(quoted(n, MAX_QUOTED_LEN) for n in names[:MAX_QUOTED])
    more = len(names) - MAX_QUOTED
    return f"{shown} and {more} more" if more > 0 else shown


class InvalidMerchantConfig(ValueError):
    """Contradictions in a config; each entry is (field, what is wrong)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


@dataclass(frozen=True, slots=True)
class MethodRule:
    method: MethodType
    # 0 means no limit.
    min_amount_minor: int = 0
    max_amount_minor: int = 0
    # Processor names in preference order; empty means every configured processor.
    processors: tuple[str, ...] = ()

    def admits(self, amount_minor: int) -> bool:
        if amount_minor < max(1, self.min_amount_minor):
            return False
        return not self.max_amount_minor or amount_minor <= self.max_amount_minor


@dataclass(frozen=True, slots=True)
class InstallmentPolicy:
    # 0 means "100.00 in the currency", resolved per currency.
    min_total_minor: int = 0
    count: int = 3
    interval_days: int = 30
    dunning_days: tuple[int, ...] = (3, 7, 14)


@dataclass(frozen=True, slots=True)
class MerchantConfig:
    merchant_id: str
    version: int = 0
    # Enabled methods, each type once; a method not listed is blocked. Their order is
    # not used: a request lists its methods in the order it wants them.
    methods: tuple[MethodRule, ...] = (
        MethodRule(MethodType.CARD),
        MethodRule(MethodType.APPLE_PAY),
        MethodRule(MethodType.GOOGLE_PAY),
    )
    # Empty means any ISO-4217 currency.
    allowed_currencies: frozenset[str] = frozenset()
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    allow_partial: bool = False
    fallback_on_failure: bool = False
    installment_policy: InstallmentPolicy = field(default_factory=InstallmentPolicy)

    def rule(self, method: MethodType) -> MethodRule | None:
        for rule in self.methods:
            if rule.method is method:
                return rule
        return None

    def validate(
        self,
        known_processors: frozenset[str],
        *,
        found: Sequence[tuple[str, str]] = (),
        method_positions: Sequence[int] = (),
    ) -> None:
        """Raise every problem at once: `found` (what reading the config from outside
        already refused) and each contradiction here. `method_positions` says where each
        rule stood in what was sent when some could not be read, so a problem names the
        method the caller wrote."""
        problems: list[tuple[str, str]] = list(found)
        seen: set[MethodType] = set()
        if not self.methods:
            problems.append(("methods", "enable at least one payment method"))
        for i, rule in enumerate(self.methods):
            name = f"methods[{method_positions[i] if method_positions else i}]"
            if rule.method in seen:
                problems.append((f"{name}.type", f"{rule.method.value} is listed twice"))
            seen.add(rule.method)
            lo, hi = rule.min_amount_minor, rule.max_amount_minor
            for limit, value in (("min_amount_minor", lo), ("max_amount_minor", hi)):
                if value < 0:
                    problems.append((f"{name}.{limit}", "cannot be negative"))
            if hi > 0 and lo > hi:
                problems.append(
                    (
                        f"{name}.min_amount_minor",
                        f"min_amount_minor {lo} exceeds max_amount_minor {hi}",
                    )
                )
            unknown = [p for p in rule.processors if p not in known_processors]
            if unknown:
                known = ", ".join(sorted(known_processors))
                problems.append(
                    (f"{name}.processors", f"unknown processors {_quoted(unknown)}; known: {known}")
                )
            if len(set(rule.processors)) != len(rule.processors):
                problems.append((f"{name}.processors", "a processor is listed twice"))
        unknown_codes = sorted(c for c in self.allowed_currencies if c not in EXPONENTS)
        if unknown_codes:
            problems.append(("allowed_currencies", f"{_quoted(unknown_codes)}: not ISO-4217 codes"))
        p = self.installment_policy
        if not 2 <= p.count <= MAX_COUNT:
            problems.append(("installment_policy.count", f"must be 2..{MAX_COUNT}"))
        if not 1 <= p.interval_days <= MAX_INTERVAL_DAYS:
            problems.append(("installment_policy.interval_days", f"must be 1..{MAX_INTERVAL_DAYS}"))
        if p.min_total_minor < 0:
            problems.append(("installment_policy.min_total_minor", "cannot be negative"))
        if list(p.dunning_days) != sorted(set(p.dunning_days)) or any(
            d < 1 for d in p.dunning_days
        ):
            problems.append(("installment_policy.dunning_days", "must be increasing positive days"))
        if len(p.dunning_days) > MAX_LADDER_STEPS:
            problems.append(
                ("installment_policy.dunning_days", f"at most {MAX_LADDER_STEPS} dunning steps")
            )
        if any(d > MAX_DUNNING_DAY for d in p.dunning_days):
            problems.append(
                ("installment_policy.dunning_days", f"days must be at most {MAX_DUNNING_DAY}")
            )
        if problems:
            raise InvalidMerchantConfig(problems)


def retry_policy(
    max_retries: int, base_delay_ms: int, max_delay_ms: int
) -> tuple[RetryPolicy, list[tuple[str, str]]]:
    """A retry policy from config values where 0 means "the default", and one problem
    per value out of range (`retry_policy.<field>`); the default stands in meanwhile."""
    default = RetryPolicy()
    base = base_delay_ms or default.base_delay_ms
    top = max_delay_ms or default.max_delay_ms
    problems = [(f"retry_policy.{f}", m) for f, m in retry_policy_problems(max_retries, base, top)]
    if problems:
        return default, problems
    return RetryPolicy(max_retries=max_retries, base_delay_ms=base, max_delay_ms=top), []
