"""Inbound Stripe webhooks: verified, deduplicated, applied through the app."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from payorch.app.payments import (
    PaymentInProgress,
    ProcessorEvent,
    ProcessorEvents,
    ProcessorUnanswered,
    RefundEvent,
)
from payorch.app.ports import Clock
from payorch.entrypoints.http.stripe_signature import SignatureRefused, verify_signature

log = logging.getLogger("payorch.webhooks.stripe")
CHARGED_EVENTS = {"payment_intent.succeeded", "payment_intent.amount_capturable_updated"}
HINT_EVENTS = {
    "payment_intent.payment_failed",
    "payment_intent.requires_action",
    "payment_intent.processing",
    "payment_intent.canceled",
}
# A charge refunded (its object a Charge), a refund made or changed (a Refund: failed,
# canceled, pending to succeeded): hints to read the PaymentIntent's refunds from Stripe.
REFUND_EVENTS = {
    "charge.refunded",
    "charge.refund.updated",
    "refund.created",
    "refund.updated",
    "refund.failed",
}
# The processor Stripe's events are about.
PROCESSOR = "stripe"


class MalformedEvent(ValueError):
    """A signed body that is not a Stripe event of the shape Stripe sends."""


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedEvent(f"{what} is not an object")
    return value


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedEvent(f"{what} is not a string")
    return value


def read_event(body: bytes) -> tuple[str, str, dict[str, Any]]:
    """The event's id, its type and its data.object; MalformedEvent (a ValueError, as
    is a body that is not JSON) when the body is no Stripe event."""
    try:
        event = _object(json.loads(body), "the event")
    except RecursionError as exc:  # nested deeper than the parser goes
        raise MalformedEvent("nested too deep") from exc
    event_id = _string(event.get("id"), "id")
    if not event_id:
        raise MalformedEvent("the event has no id")
    data = _object(event.get("data"), "data")
    return event_id, _string(event.get("type"), "type"), _object(data.get("object"), "object")


def payorch_step(intent: dict[str, Any]) -> tuple[str, int] | None:
    """The payment and step a PaymentIntent of ours names in its metadata, or None."""
    metadata = _object(intent.get("metadata") or {}, "metadata")
    payment_id = _string(metadata.get("payorch_payment_id", ""), "payorch_payment_id")
    step = _string(metadata.get("payorch_step", ""), "payorch_step")
    if not payment_id or not (step.isascii() and step.isdigit()):
        return None
    return payment_id, int(step)


def stripe_webhook_handler(
    events: ProcessorEvents, secret: str, clock: Clock
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        body = await request.read()  # capped by the application's client_max_size
        signature = request.headers.get("Stripe-Signature", "")
        try:
            verify_signature(body, signature, secret, clock.now())
        except SignatureRefused:
            return web.json_response({"error": "invalid signature"}, status=400)
        try:
            event_id, kind, intent = read_event(body)
            if kind in REFUND_EVENTS:
                # Neither a Charge nor a Refund carries our metadata: the PaymentIntent does.
                refunded = _string(intent.get("payment_intent") or "", "payment_intent")
            elif kind not in CHARGED_EVENTS | HINT_EVENTS:
                return web.json_response({"result": "ignored"})
            else:
                ours = payorch_step(intent)
                intent_id = _string(intent.get("id"), "the PaymentIntent's id")
        except ValueError as exc:
            return web.json_response({"error": f"not a Stripe event: {exc}"}, status=400)
        try:
            if kind in REFUND_EVENTS:
                if not refunded:
                    return web.json_response({"result": "not ours"})  # no PaymentIntent's charge
                result = await events.apply_refunds(
                    RefundEvent(event_id, "webhook", PROCESSOR, refunded)
                )
                log.info("stripe event %s on %s: %s", kind, refunded, result)
                return web.json_response({"result": result})
            if ours is None:
                return web.json_response({"result": "not ours"})
            payment_id, step_index = ours
            result = await events.apply(
                ProcessorEvent(
                    event_id=event_id,
                    source="webhook",
                    payment_id=payment_id,
                    step_index=step_index,
                    processor_payment_id=intent_id,
                    charged=kind in CHARGED_EVENTS,
                )
            )
        except PaymentInProgress as exc:
            # A live run may still settle it: not remembered, and any answer but a 2xx
            # makes Stripe send it again (with back-off, for up to three days). A 409,
            # not a 5xx: nothing failed.
            log.info("stripe event %s (%s) not acted on yet: %s", kind, event_id, exc)
            return web.json_response({"error": f"{exc}: send the event again"}, status=409)
        except ProcessorUnanswered as exc:
            # Stripe could not be asked. The event was forgotten: its redelivery is new.
            log.warning("stripe event %s (%s) not acted on: %s", kind, event_id, exc)
            return web.json_response({"error": f"{exc}: send the event again"}, status=500)
        log.info("stripe event %s: %s", kind, result, extra={"payment_id": payment_id})
        return web.json_response({"result": result})

    return handle
