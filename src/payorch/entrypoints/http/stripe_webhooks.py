"""Inbound Stripe webhooks: verified, deduplicated, applied through the app."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import stripe
from aiohttp import web

from payorch.app.payments import ProcessorEvent, ProcessorEvents
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
            event = stripe.Event.construct_from(json.loads(body), None)
        except ValueError:
            return web.json_response({"error": "invalid payload"}, status=400)
        if event.type not in CHARGED_EVENTS | HINT_EVENTS:
            return web.json_response({"result": "ignored"})
        intent = event.data.object.to_dict()
        metadata = intent.get("metadata") or {}
        payment_id = str(metadata.get("payorch_payment_id", ""))
        try:
            step_index = int(metadata.get("payorch_step", "-1"))
        except ValueError:
            step_index = -1
        if not payment_id or step_index < 0:
            return web.json_response({"result": "not ours"})
        result = await events.apply(
            ProcessorEvent(
                event_id=event.id,
                source="webhook",
                payment_id=payment_id,
                step_index=step_index,
                processor_payment_id=str(intent.get("id", "")),
                charged=event.type in CHARGED_EVENTS,
            )
        )
        log.info("stripe event %s: %s", event.type, result, extra={"payment_id": payment_id})
        return web.json_response({"result": result})

    return handle
