"""Stripe-Signature: is this body Stripe's, signed with our endpoint secret, and fresh?"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

# Stripe's default: a signature made further than this from our clock, either way, is
# refused (replay protection that still allows for some skew between the clocks).
TOLERANCE_S = 300
# The one scheme signed with the endpoint secret; v0 (test mode) and others are ignored.
SCHEME = "v1"


class SignatureRefused(ValueError):
    """The Stripe-Signature header does not vouch for this body at this time."""


def verify_signature(body: bytes, header: str, secret: str, now: datetime) -> None:
    """Pass when one v1 signature in `header` is the HMAC-SHA256 under `secret` of the
    timestamp, a dot and the raw body, and the timestamp is within TOLERANCE_S of `now`.

    Several v1 signatures arrive while the endpoint secret is being rolled; one match is
    enough. Stripe's SDK checks only the past side, and against the wall clock."""
    timestamps, signatures = [], []
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == SCHEME:
            signatures.append(value)
    if len(timestamps) != 1 or not (timestamps[0].isascii() and timestamps[0].isdigit()):
        raise SignatureRefused("no timestamp")
    if not signatures:
        raise SignatureRefused(f"no {SCHEME} signature")
    signed_at = timestamps[0]
    expected = hmac.new(
        secret.encode(), signed_at.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    # Compared as bytes: compare_digest refuses a str with non-ASCII characters.
    if not any(
        hmac.compare_digest(expected.encode(), s.encode("utf-8", "replace")) for s in signatures
    ):
        raise SignatureRefused("no signature matches")
    try:
        skew_s = abs(int(now.timestamp()) - int(signed_at))
    except ValueError as exc:  # more digits than Python converts
        raise SignatureRefused("no timestamp") from exc
    if skew_s > TOLERANCE_S:
        raise SignatureRefused(f"signed {skew_s} s away from our clock")
