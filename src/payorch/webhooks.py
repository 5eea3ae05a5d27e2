"""Signing and verifying payorch webhooks, the Standard Webhooks way (standardwebhooks.com).

For receivers: `verify(secret, headers, body)` returns the event or raises
`WebhookVerificationError`. Standard library only, so it can be copied as is.

    webhook-id:        the event id; the same on every retry (dedupe on it)
    webhook-timestamp: Unix seconds when this attempt was sent
    webhook-signature: v1,<base64 HMAC-SHA256 over "<id>.<timestamp>.<body>">

The key is the base64 text after `whsec_` in the secret, decoded; an empty one is
refused. Several signatures may be sent separated by spaces (key rotation); one valid
`v1,` one is enough, others are ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

SECRET_PREFIX = "whsec_"
TOLERANCE_S = 5 * 60
SECRET_BYTES = 32
# Unix seconds have 10 digits until the year 2286.
MAX_TIMESTAMP_DIGITS = 12
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class WebhookVerificationError(Exception):
    pass


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_secret(secret: str) -> None:
    """Raise WebhookVerificationError for a secret no signature can be checked with: not
    base64 after whsec_, or empty. A receiver calls it once at start-up, so a secret
    setting that came out empty stops it there instead of refusing every webhook."""
    _key(secret)


def _key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookVerificationError("the secret is not base64 after whsec_") from exc
    # A secret setting that came out empty would take an HMAC anyone can compute.
    if not key:
        raise WebhookVerificationError("the secret is empty")
    return key


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes | str) -> str:
    """The `webhook-signature` value: `v1,<base64 signature>`."""
    payload = body.encode() if isinstance(body, str) else body
    content = f"{webhook_id}.{timestamp}.".encode() + payload
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode()}"


def headers_for(
    secret: str | Sequence[str], webhook_id: str, timestamp: int, body: bytes | str
) -> dict[str, str]:
    """The three headers; several secrets (a rotation's new and old) give one `v1,`
    signature each in `webhook-signature`, space-separated, in their order."""
    keys = [secret] if isinstance(secret, str) else list(secret)
    if not keys:
        raise ValueError("no secret to sign with")
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(k, webhook_id, timestamp, body) for k in keys),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    now: datetime | float | None = None,
    tolerance_s: int = TOLERANCE_S,
) -> Any:
    """Check the signature and the timestamp (within `tolerance_s` of `now`, default the
    system clock); return the decoded JSON body. `now` is Unix seconds or an aware
    datetime: a naive one is refused with ValueError (the caller's mistake, not the
    sender's), as it would be read in the host's local zone."""
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    missing = [name for name in HEADERS if not lowered.get(name)]
    if missing:
        raise WebhookVerificationError(f"missing header: {', '.join(missing)}")
    # Seconds as plain ASCII digits: int() would also take " 17", "+17" or "1_7". And
    # few of them: int() refuses more than 4300 digits with a ValueError.
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > MAX_TIMESTAMP_DIGITS:
        raise WebhookVerificationError("invalid webhook-timestamp")
    timestamp = int(stamp)
    if now is None:
        current = time.time()
    elif isinstance(now, datetime):
        # A naive datetime's timestamp() reads it in the host's local zone: hours off
        # on any host not set to UTC, refusing good webhooks or taking stale ones.
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be an aware datetime (e.g. datetime.now(UTC))")
        current = now.timestamp()
    else:
        current = float(now)
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError("message timestamp too old")
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError("message timestamp too new")
    expected = sign(secret, webhook_id, timestamp, body).encode()
    candidates = [c for c in signatures.split(" ") if c.startswith("v1,") and len(c) > 3]
    if not candidates:
        raise WebhookVerificationError("webhook-signature has no v1,<base64> signature")
    for candidate in candidates:
        if hmac.compare_digest(candidate.encode(), expected):
            try:
                return json.loads(body)
            except ValueError as exc:  # UnicodeDecodeError too
                raise WebhookVerificationError("signed, but the body is not JSON") from exc
    raise WebhookVerificationError("no matching signature")
