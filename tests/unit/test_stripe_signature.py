"""The Stripe-Signature check on its own: raw bytes, schemes, and the clock."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from payorch.entrypoints.http.stripe_signature import SignatureRefused, verify_signature

SECRET = "whsec_unit"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
BODY = '{"id": "evt_1", "note": "caf\u00e9"}'.encode()


def mac(signed_at: str, body: bytes = BODY, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), signed_at.encode() + b"." + body, hashlib.sha256).hexdigest()


def test_a_signature_over_the_raw_bytes_at_our_time_passes():
    t = str(int(NOW.timestamp()))
    verify_signature(BODY, f"t={t},v1={mac(t)}", SECRET, NOW)


def test_a_signature_over_other_bytes_is_refused():
    t = str(int(NOW.timestamp()))
    with pytest.raises(SignatureRefused):
        verify_signature(BODY + b" ", f"t={t},v1={mac(t)}", SECRET, NOW)


def test_a_signed_timestamp_too_long_to_read_is_refused_not_a_crash():
    t = "1" * 5000  # past the digits Python converts to an int
    with pytest.raises(SignatureRefused):
        verify_signature(BODY, f"t={t},v1={mac(t)}", SECRET, NOW)


def test_two_timestamps_are_refused():
    t = str(int(NOW.timestamp()))
    with pytest.raises(SignatureRefused):
        verify_signature(BODY, f"t={t},t=1,v1={mac(t)}", SECRET, NOW)


@pytest.mark.parametrize(
    "t",
    [
        "+1767225600",
        " 1767225600",
        "1_767_225_600",
        "\uff11\uff17\uff16\uff17\uff12\uff12\uff15\uff16\uff10\uff10",
    ],
    ids=["plus", "space", "underscores", "fullwidth"],
)
def test_a_timestamp_that_is_not_plain_ascii_digits_is_refused_even_when_signed(t):
    # int() reads each of these as our time; Stripe sends plain digits only.
    with pytest.raises(SignatureRefused, match="no timestamp"):
        verify_signature(BODY, f"t={t},v1={mac(t)}", SECRET, NOW)


@pytest.mark.parametrize(("skew_s", "ok"), [(-300, True), (300, True), (-301, False), (301, False)])
def test_a_signature_up_to_five_minutes_off_our_clock_either_way_passes(skew_s, ok):
    t = str(int(NOW.timestamp()) + skew_s)
    if ok:
        verify_signature(BODY, f"t={t},v1={mac(t)}", SECRET, NOW)
    else:
        with pytest.raises(SignatureRefused, match="away from our clock"):
            verify_signature(BODY, f"t={t},v1={mac(t)}", SECRET, NOW)
