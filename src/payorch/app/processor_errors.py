"""A processor adapter that raised instead of answering.

Adapters answer with data and never raise (payorch.app.ports.Processor). One that does
anyway (a bug of ours, or an answer it could not read) may have raised after its request
reached the processor: the call's outcome is unknown. It is turned into an answer that
says so (classified UNKNOWN, `unknown_outcome`, never retried at once: the step is left
to the reconciler, and no fallback is charged), logged once with the exception's type,
where it was raised and its message with any card number removed (never a traceback,
whose message could carry one), and counted in the processor's health as a call that
failed: a processor whose calls raise is routed around, as one that does not answer.
"""

from __future__ import annotations

import logging
import traceback

from payorch.domain.card_data import clip, redact_card_numbers
from payorch.domain.classification import ADAPTER_ERROR
from payorch.domain.results import ProcessorResponse, ResponseKind

log = logging.getLogger("payorch.processors")

# Enough of the exception's message to tell one bug from another.
MESSAGE_LIMIT = 200


def described(exc: BaseException) -> str:
    """`Type at file:line in function: message`, the message clipped and any card number
    in it removed."""
    where = ""
    if frames := traceback.extract_tb(exc.__traceback__):
        last = frames[-1]
        where = f" at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"
    message = clip(redact_card_numbers(str(exc)), MESSAGE_LIMIT)
    return f"{type(exc).__name__}{where}: {message}"


def raised_answer(
    processor: str, operation: str, exc: Exception, *, charge_not_sent: bool = False
) -> ProcessorResponse:
    """The answer standing for a call to `processor` whose adapter raised `exc`, logged
    once. `charge_not_sent`: the adapter knows nothing able to charge went out (Stripe:
    it raised on the PaymentIntent's create, before any confirm)."""
    what = described(exc)
    log.error(
        "processor %s: its adapter raised on %s instead of answering: %s; %s",
        processor,
        operation,
        what,
        "nothing was charged (no charge was sent)"
        if charge_not_sent
        else "the call's outcome is unknown: the payment is reconciled",
    )
    return ProcessorResponse(
        ResponseKind.ERROR,
        error_type=ADAPTER_ERROR,
        exception=type(exc).__name__,
        message=f"the {processor} adapter raised {what}",
        charge_not_sent=charge_not_sent,
    )
