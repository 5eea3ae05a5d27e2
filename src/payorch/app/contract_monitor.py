"""ContractMonitor: records contract violations without ever getting in a request's way.

Violations go to a sink that buffers them (the adapter writes them in the
background); a failing sink costs a counter. A call scope, opened by whoever
receives a request (the gRPC interceptor), carries the request and merchant ids
to violations recorded deeper down, and remembers what was recorded in it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from payorch.app.ids import new_id
from payorch.app.observability import Observers
from payorch.app.ports import Clock
from payorch.domain.contracts import ContractViolation, new_violation
from payorch.domain.request import Severity, ValidationIssue


class ViolationSink(Protocol):
    def record(self, violation: ContractViolation) -> bool:
        """Keep the violation for storing, without blocking; False when it was dropped."""
        ...


@dataclass(slots=True)
class CallScope:
    """One incoming call, as far as contracts go."""

    request_id: str
    merchant_id: str = ""
    # The payment the call made, once stored (named if the call is cut off).
    payment_id: str = ""
    recorded: list[ContractViolation] = field(default_factory=list)
    # Fatal issues the call was refused for (the entrypoint names them).
    rejected: list[ValidationIssue] = field(default_factory=list)
    # What was wrong with a request taken all the same (the entrypoint names them).
    noted: list[ValidationIssue] = field(default_factory=list)


_current: ContextVar[CallScope | None] = ContextVar("payorch_call_scope", default=None)


def current_call() -> CallScope | None:
    return _current.get()


def identify_call(*, merchant_id: str = "", request_id: str = "", payment_id: str = "") -> None:
    """Name the merchant, request and payment of the current call, once known."""
    scope = _current.get()
    if scope is None:
        return
    if merchant_id:
        scope.merchant_id = merchant_id
    if request_id:
        scope.request_id = request_id
    if payment_id:
        scope.payment_id = payment_id


def reject_call(issues: Sequence[ValidationIssue]) -> None:
    """The current call is refused for these fatal input issues."""
    scope = _current.get()
    if scope is not None:
        scope.rejected.extend(issues)


def note_call(issues: Sequence[ValidationIssue]) -> None:
    """The current call's request was taken with these non-fatal issues: recorded when
    the call is not refused (a refusal records why it was refused)."""
    scope = _current.get()
    if scope is not None:
        scope.noted.extend(issues)


def new_violation_id() -> str:
    return new_id("cv")


class ContractMonitor:
    def __init__(
        self,
        sink: ViolationSink,
        clock: Clock,
        observers: Observers,
        *,
        new_id: Callable[[], str] = new_violation_id,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._observers = observers
        self._new_id = new_id

    @contextlib.contextmanager
    def call(self, request_id: str) -> Iterator[CallScope]:
        scope = CallScope(request_id=request_id)
        token = _current.set(scope)
        try:
            yield scope
        finally:
            _current.reset(token)

    def record(
        self,
        contract_id: str,
        message: str,
        *,
        request_id: str | None = None,
        merchant_id: str | None = None,
        severity: Severity | None = None,
    ) -> ContractViolation | None:
        """Record one violation; ids default to the current call's. Never raises."""
        try:
            scope = _current.get()
            violation = new_violation(
                self._new_id(),
                contract_id,
                message=message,
                request_id=request_id if request_id is not None else _ids(scope)[0],
                merchant_id=merchant_id if merchant_id is not None else _ids(scope)[1],
                at=self._clock.now(),
                severity=severity,
            )
            if scope is not None:
                scope.recorded.append(violation)
            if not self._sink.record(violation):
                self._observers.violation_dropped()
        except Exception:
            self._observers.failed("contract_monitor")
            return None
        self._observers.violation_recorded(violation.contract_id, violation.severity)
        return violation


def _ids(scope: CallScope | None) -> tuple[str, str]:
    return ("", "") if scope is None else (scope.request_id, scope.merchant_id)
