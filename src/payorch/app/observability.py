"""Observing payments and calls: the ports metrics, logs and traces plug into.

Observing never blocks or fails a payment: every observer call goes through
`Observers`, which swallows an observer's error and counts it instead, and spans
go through `SafeTracer`, which does the same for a broken tracer.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar

from payorch.domain.payment import Attempt, Payment
from payorch.domain.request import Severity

log = logging.getLogger("payorch.observability")

AttributeValue = str | int | float | bool

Told = TypeVar("Told")


def tell(observer: Callable[[Told], None] | None, what: Told, about: str) -> None:
    """Hand what a background job did (a scheduler or webhook pass, an escalation) to
    its observer; an observer that fails is logged and never stops the job."""
    if observer is None:
        return
    try:
        observer(what)
    except Exception:
        log.exception("counting %s failed", about)


class Via(enum.Enum):
    """The call that stored a change to a payment: a bounded metric label."""

    CREATE = "create"  # CreatePayment (an installment's charge too)
    CONFIRM = "confirm"  # ConfirmPayment, after the customer acted (3-D Secure)
    CANCEL = "cancel"  # CancelPayment
    CAPTURE = "capture"  # CapturePayment
    REFUND = "refund"  # RefundPayment
    WEBHOOK = "webhook"  # a processor's event, and what it led to
    RECONCILER = "reconciler"  # the reconciler: an unknown outcome, a crash, an owed call
    EXPIRY = "expiry"  # the reconciler giving up a payment the customer left paused


class Observer(Protocol):
    """What happened, for metrics and logs. Implementations must not block."""

    def payment_finished(self, payment: Payment) -> None:
        """A payment's CreatePayment ended (in whatever status, open ones too)."""
        ...

    def attempts_stored(self, payment: Payment, attempts: Sequence[Attempt]) -> None:
        """Processor calls just stored, each once, whichever call made them."""
        ...

    def payment_settled(self, payment: Payment, via: Via) -> None:
        """A save committed here took the payment out of the open states (processing,
        unknown, requires_action) into `payment.status`: once per payment."""
        ...

    def payment_recovered(self, payment: Payment) -> None:
        """A save committed here made the payment one that took the money after an
        infrastructure failure (as GetPaymentStats counts them): once per payment."""
        ...

    def reconcile_failed(self) -> None:
        """A reconciler pass could not work on a payment (its work raised): backed off."""
        ...

    def validation_issue(self, contract_id: str) -> None:
        """A request was accepted with a non-fatal issue against `contract_id`."""
        ...

    def violation_recorded(self, contract_id: str, severity: Severity) -> None: ...

    def violation_dropped(self) -> None:
        """A violation was not stored (the buffer was full, or the write failed)."""
        ...

    def rpc_finished(self, rpc: str, code: str, seconds: float) -> None: ...


class ObserverErrors(Protocol):
    def observer_failed(self, where: str) -> None:
        """An observer, tracer or violation write failed; the request went on."""
        ...


class NullObserver:
    """Observes nothing; adapters subclass it and implement what they care about."""

    def payment_finished(self, payment: Payment) -> None:
        pass

    def attempts_stored(self, payment: Payment, attempts: Sequence[Attempt]) -> None:
        pass

    def payment_settled(self, payment: Payment, via: Via) -> None:
        pass

    def payment_recovered(self, payment: Payment) -> None:
        pass

    def reconcile_failed(self) -> None:
        pass

    def validation_issue(self, contract_id: str) -> None:
        pass

    def violation_recorded(self, contract_id: str, severity: Severity) -> None:
        pass

    def violation_dropped(self) -> None:
        pass

    def rpc_finished(self, rpc: str, code: str, seconds: float) -> None:
        pass


class Observers:
    """Fans every event out to the observers; one that raises is counted and skipped."""

    def __init__(
        self, observers: Sequence[Observer] = (), errors: ObserverErrors | None = None
    ) -> None:
        self._observers = list(observers)
        self._errors = errors

    def failed(self, where: str) -> None:
        log.warning("observer failed: %s", where, exc_info=True)
        if self._errors is not None:
            with contextlib.suppress(Exception):
                self._errors.observer_failed(where)

    def payment_finished(self, payment: Payment) -> None:
        for o in self._observers:
            try:
                o.payment_finished(payment)
            except Exception:
                self.failed("payment_finished")

    def attempts_stored(self, payment: Payment, attempts: Sequence[Attempt]) -> None:
        for o in self._observers:
            try:
                o.attempts_stored(payment, attempts)
            except Exception:
                self.failed("attempts_stored")

    def payment_settled(self, payment: Payment, via: Via) -> None:
        for o in self._observers:
            try:
                o.payment_settled(payment, via)
            except Exception:
                self.failed("payment_settled")

    def payment_recovered(self, payment: Payment) -> None:
        for o in self._observers:
            try:
                o.payment_recovered(payment)
            except Exception:
                self.failed("payment_recovered")

    def reconcile_failed(self) -> None:
        for o in self._observers:
            try:
                o.reconcile_failed()
            except Exception:
                self.failed("reconcile_failed")

    def validation_issue(self, contract_id: str) -> None:
        for o in self._observers:
            try:
                o.validation_issue(contract_id)
            except Exception:
                self.failed("validation_issue")

    def violation_recorded(self, contract_id: str, severity: Severity) -> None:
        for o in self._observers:
            try:
                o.violation_recorded(contract_id, severity)
            except Exception:
                self.failed("violation_recorded")

    def violation_dropped(self) -> None:
        for o in self._observers:
            try:
                o.violation_dropped()
            except Exception:
                self.failed("violation_dropped")

    def rpc_finished(self, rpc: str, code: str, seconds: float) -> None:
        for o in self._observers:
            try:
                o.rpc_finished(rpc, code, seconds)
            except Exception:
                self.failed("rpc_finished")


class Span(Protocol):
    def set_attribute(self, key: str, value: AttributeValue) -> None: ...


class Tracer(Protocol):
    def span(
        self, name: str, attributes: Mapping[str, AttributeValue] | None = None
    ) -> AbstractContextManager[Span]:
        """A child of the current span (or a root), current inside the `with`."""
        ...


class _NullSpan:
    def set_attribute(self, key: str, value: AttributeValue) -> None:
        pass


NULL_SPAN = _NullSpan()
# nullcontext keeps no state between uses: one serves every span when tracing is off.
_NULL_SPAN_CONTEXT: AbstractContextManager[Span] = contextlib.nullcontext(NULL_SPAN)


class NullTracer:
    """Tracing off: spans cost a function call."""

    def span(
        self, name: str, attributes: Mapping[str, AttributeValue] | None = None
    ) -> AbstractContextManager[Span]:
        return _NULL_SPAN_CONTEXT


class _SafeSpan:
    def __init__(self, inner: Span, failed: Observers) -> None:
        self._inner = inner
        self._failed = failed

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        try:
            self._inner.set_attribute(key, value)
        except Exception:
            self._failed.failed("tracer")


class SafeTracer:
    """A tracer whose failures are counted, never raised into the traced code."""

    def __init__(self, inner: Tracer, errors: Observers) -> None:
        self._inner = inner
        self._errors = errors

    @contextlib.contextmanager
    def span(
        self, name: str, attributes: Mapping[str, AttributeValue] | None = None
    ) -> Iterator[Span]:
        try:
            cm = self._inner.span(name, attributes)
            inner = cm.__enter__()
        except Exception:
            self._errors.failed("tracer")
            yield NULL_SPAN
            return
        try:
            yield _SafeSpan(inner, self._errors)
        except BaseException as exc:
            # The traced code's own error always goes on up, whatever the span does.
            try:
                cm.__exit__(type(exc), exc, exc.__traceback__)
            except BaseException as span_exc:
                if span_exc is not exc:
                    self._errors.failed("tracer")
            raise
        else:
            try:
                cm.__exit__(None, None, None)
            except Exception:
                self._errors.failed("tracer")
