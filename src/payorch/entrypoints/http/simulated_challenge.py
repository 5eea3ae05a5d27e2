"""The simulated processor's 3-D Secure page, test mode only: what Stripe.js and the
bank's challenge do for a Stripe PaymentIntent, a customer's side (a demo, a test)
does here for a simulated one, with the intent's client secret.

    POST /simulated/3ds/{intent_id}
    client_secret=pi_sim_..._secret_...&outcome=complete|fail   (form body)

The secret goes in the body, never the URL, so that no access log or proxy keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from payorch.adapters.processors.simulated import AnswerChallenge, ChallengeRefused

log = logging.getLogger("payorch.simulated")
PATH = "/simulated/3ds/{intent_id}"
OUTCOMES = {"complete": True, "fail": False}
_REFUSED_STATUS = {"unknown_intent": 404, "wrong_secret": 403, "not_waiting": 409}


def _refused(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": {"reason": reason, "message": message}}, status=status)


def challenge_handler(
    answer: AnswerChallenge,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        intent_id = request.match_info["intent_id"]
        if "client_secret" in request.query:
            return _refused(
                400,
                "secret_in_url",
                "send client_secret in the form body, not the URL (URLs are logged)",
            )
        form = await request.post()
        secret, outcome = form.get("client_secret"), form.get("outcome")
        if not isinstance(secret, str) or not secret:
            return _refused(400, "invalid_request", "client_secret is required")
        if outcome not in OUTCOMES:
            return _refused(400, "invalid_request", "outcome must be complete or fail")
        passed = OUTCOMES[str(outcome)]
        try:
            status = answer(intent_id, secret, passed)
        except ChallengeRefused as refused:
            return _refused(_REFUSED_STATUS[refused.reason], refused.reason, str(refused))
        log.info(
            "simulated 3-D Secure %s for %s: %s",
            "passed" if passed else "failed",
            intent_id,
            status,
        )
        return web.json_response({"id": intent_id, "outcome": outcome, "status": status})

    return handle
