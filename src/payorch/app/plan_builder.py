"""PlanBuilder: a strict request + a merchant config -> the steps of a payment.

Deterministic: the same request and config version always give the same plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import MethodType
from payorch.domain.request import CoreRequest, MethodInput


class PlanRejected(ValueError):
    """The config cannot cover the request; each entry is (field, reason)."""

    def __init__(self, problems: list[tuple[str, str]], contract_id: str = "plan/coverage"):
        self.problems = problems
        self.contract_id = contract_id
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


@dataclass(frozen=True, slots=True)
class PlannedStep:
    method: MethodType
    token: str
    customer_id: str
    amount_minor: int
    processors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[PlannedStep, ...]
    # Requested methods left over, in order: where a failed step's amount may go.
    fallbacks: tuple[MethodInput, ...]
    config_version: int


def build_plan(request: CoreRequest, config: MerchantConfig, all_processors: Sequence[str]) -> Plan:
    """Walk the requested methods in order: an explicit amount is taken as given (it
    must fit the method's limits); a method without one takes what remains, up to its
    maximum. Methods left once the total is covered are fallbacks."""
    currency = request.amount.currency.code
    if config.allowed_currencies and currency not in config.allowed_currencies:
        raise PlanRejected(
            [("currency", f"{currency} is not accepted by merchant {config.merchant_id}")],
            "policy/currency",
        )
    blocked = [
        (
            f"methods[{i}].method",
            f"{m.method.value} is not enabled for merchant {config.merchant_id}",
        )
        for i, m in enumerate(request.methods)
        if config.rule(m.method) is None
    ]
    if blocked:
        raise PlanRejected(blocked, "policy/method")

    remaining = request.amount.amount_minor
    steps: list[PlannedStep] = []
    fallbacks: list[MethodInput] = []
    problems: list[tuple[str, str]] = []
    for i, m in enumerate(request.methods):
        rule = config.rule(m.method)
        assert rule is not None
        processors = rule.processors or tuple(all_processors)
        if remaining == 0:
            if m.amount_minor is not None:
                problems.append((f"methods[{i}].amount", "the total is already covered"))
            fallbacks.append(m)
            continue
        if m.amount_minor is not None:
            amount = m.amount_minor
            if amount > remaining:
                problems.append(
                    (f"methods[{i}].amount", f"{amount} exceeds the {remaining} left to cover")
                )
                continue
            if not rule.admits(amount):
                problems.append(
                    (
                        f"methods[{i}].amount",
                        _limits(rule.min_amount_minor, rule.max_amount_minor, m.method),
                    )
                )
                continue
        else:
            amount = min(remaining, rule.max_amount_minor or remaining)
            if not rule.admits(amount):
                fallbacks.append(m)  # cannot take what is left: keep it as a fallback
                continue
        steps.append(
            PlannedStep(m.method, m.token, m.customer_id or request.customer_id, amount, processors)
        )
        remaining -= amount
    if problems:
        raise PlanRejected(problems)
    if remaining:
        raise PlanRejected(
            [
                (
                    "methods",
                    f"{remaining} minor units are not covered by the methods and their limits",
                )
            ]
        )
    return Plan(tuple(steps), tuple(fallbacks), config.version)


def _limits(lo: int, hi: int, method: MethodType) -> str:
    bounds = f"at least {max(lo, 1)}" + (f" and at most {hi}" if hi else "")
    return f"{method.value} takes {bounds} minor units for this merchant"
