"""payorch.webhooks: Standard Webhooks signatures, as receivers verify them."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pytest

from payorch import webhooks
from payorch.webhooks import WebhookVerificationError, generate_secret, headers_for, sign, verify

# The Standard Webhooks specification's published test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = '{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signatures_match_the_standard_webhooks_test_vector():
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    assert verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS + 10) == {"test": 2432232314}


def test_a_fresh_secret_verifies_its_own_messages_and_not_anothers():
    secret = generate_secret()
    assert secret.startswith("whsec_") and secret != generate_secret()
    body = b'{"type":"installment.paid"}'
    headers = headers_for(secret, "evt_1", 1_700_000_000, body)
    assert verify(secret, headers, body, now=1_700_000_000)["type"] == "installment.paid"
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(generate_secret(), headers, body, now=1_700_000_000)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b + b" "),
        lambda h, b: ({**h, "webhook-id": "evt_2"}, b),
        lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b),
        lambda h, b: ({**h, "webhook-signature": h["webhook-signature"].replace("v1,", "v2,")}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
    ],
    ids=["body", "id", "timestamp", "version", "missing signature"],
)
def test_a_tampered_message_is_refused(tamper):
    secret = generate_secret()
    body = b'{"a":1}'
    headers, body = tamper(headers_for(secret, "evt_1", 1_700_000_000, body), body)
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, body, now=1_700_000_000)


@pytest.mark.parametrize(("skew", "ok"), [(-301, False), (-300, True), (300, True), (301, False)])
def test_timestamps_more_than_five_minutes_off_are_refused(skew, ok):
    secret = generate_secret()
    headers = headers_for(secret, "evt_1", 1_700_000_000, "{}")
    now = 1_700_000_000 - skew
    if ok:
        verify(secret, headers, "{}", now=now)
    else:
        with pytest.raises(WebhookVerificationError, match="timestamp too"):
            verify(secret, headers, "{}", now=now)


def test_any_one_of_several_signatures_is_enough_for_key_rotation():
    old, new = generate_secret(), generate_secret()
    body = "{}"
    headers = headers_for(new, "evt_1", 1_700_000_000, body)
    headers["webhook-signature"] = (
        f"{sign(old, 'evt_1', 1_700_000_000, body)} {headers['webhook-signature']}"
    )
    assert verify(new, headers, body, now=1_700_000_000) == {}
    assert verify(old, headers, body, now=1_700_000_000) == {}


def test_header_names_are_case_insensitive():
    secret = generate_secret()
    headers = {k.title(): v for k, v in headers_for(secret, "evt_1", 1_700_000_000, "{}").items()}
    assert verify(secret, headers, "{}", now=1_700_000_000) == {}


def test_signatures_are_compared_in_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webhooks.hmac, "compare_digest", spy)
    secret = generate_secret()
    verify(secret, headers_for(secret, "evt_1", 1_700_000_000, "{}"), "{}", now=1_700_000_000)
    assert calls, "the comparison must go through hmac.compare_digest"


@pytest.mark.parametrize(
    "stamp",
    [" 1700000000", "+1700000000", "1_700_000_000", "１７００", "9" * 5_000],
    ids=["space", "plus", "underscores", "fullwidth", "5000-digits"],
)
def test_a_timestamp_that_is_not_plain_digits_is_refused(stamp):
    # 5000 digits fit in a header (aiohttp takes 8190 bytes) and are past what int()
    # converts (4300): a ValueError would be the receiver's 500, not its 400.
    secret = generate_secret()
    headers = {**headers_for(secret, "evt_1", 1_700_000_000, "{}"), "webhook-timestamp": stamp}
    with pytest.raises(WebhookVerificationError, match="invalid webhook-timestamp"):
        verify(secret, headers, "{}", now=1_700_000_000)


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe", b""])
def test_a_signed_body_that_is_not_json_is_a_verification_error(body):
    secret = generate_secret()
    headers = headers_for(secret, "evt_1", 1_700_000_000, body)
    with pytest.raises(WebhookVerificationError, match="not JSON"):
        verify(secret, headers, body, now=1_700_000_000)


@pytest.mark.parametrize("secret", ["", "whsec_"])
def test_an_empty_secret_verifies_nothing(secret):
    # A receiver whose secret setting came out empty must not take messages anyone can
    # sign: an HMAC under an empty key is no secret at all.
    body = "{}"
    forged = {
        "webhook-id": "evt_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": "v1,"
        + base64.b64encode(hmac.new(b"", b"evt_1.1700000000.{}", hashlib.sha256).digest()).decode(),
    }
    with pytest.raises(WebhookVerificationError, match="secret is empty"):
        verify(secret, forged, body, now=1_700_000_000)
    with pytest.raises(WebhookVerificationError, match="secret is empty"):
        sign(secret, "evt_1", 1_700_000_000, body)


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        (["webhook-id"], "webhook-id"),
        (["webhook-timestamp"], "webhook-timestamp"),
        (["webhook-signature"], "webhook-signature"),
        (["webhook-id", "webhook-signature"], "webhook-id, webhook-signature"),
    ],
)
def test_a_missing_header_is_named(missing, named):
    secret = generate_secret()
    headers = headers_for(secret, "evt_1", 1_700_000_000, "{}")
    headers = {
        k: ("" if k == missing[0] else v) for k, v in headers.items() if k not in missing[1:]
    }
    with pytest.raises(WebhookVerificationError, match=f"missing header: {named}$"):
        verify(secret, headers, "{}", now=1_700_000_000)


@pytest.mark.parametrize("signature", ["sha256=abc", "v1", "v1,", "g0hM9SsE+OTPJTGt", " "])
def test_a_signature_header_with_no_v1_signature_says_so(signature):
    secret = generate_secret()
    headers = {**headers_for(secret, "evt_1", 1_700_000_000, "{}"), "webhook-signature": signature}
    with pytest.raises(WebhookVerificationError, match=r"no v1,<base64> signature"):
        verify(secret, headers, "{}", now=1_700_000_000)


class NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> None:
        return None


def test_a_naive_now_is_refused_as_the_callers_mistake_and_an_aware_one_is_taken():
    # A naive datetime's timestamp() is read in the host's local zone: on a host set to
    # UTC-5 a good webhook would be five hours "too old". Refused wherever it runs.
    secret = generate_secret()
    sent = datetime(2026, 1, 1, 12, tzinfo=UTC)
    headers = headers_for(secret, "evt_1", int(sent.timestamp()), "{}")

    with pytest.raises(ValueError, match="aware datetime") as refused:
        verify(secret, headers, "{}", now=sent.replace(tzinfo=None))
    assert not isinstance(refused.value, WebhookVerificationError)  # not the sender's fault
    # A zone that gives no offset leaves it naive all the same (Python reads it as local).
    with pytest.raises(ValueError, match="aware datetime"):
        verify(secret, headers, "{}", now=sent.replace(tzinfo=NoOffset()))
    assert verify(secret, headers, "{}", now=sent) == {}
    assert verify(secret, headers, "{}", now=sent.astimezone(timezone(timedelta(hours=-5)))) == {}


def test_check_secret_refuses_what_no_signature_can_be_checked_with():
    webhooks.check_secret(generate_secret())
    # A character outside base64 in a good key is refused, not skipped: the key the
    # sender signs with is not the one the receiver was given.
    for bad in ("", "whsec_", "whsec_!!", VECTOR_SECRET + "!"):
        with pytest.raises(WebhookVerificationError, match="the secret"):
            webhooks.check_secret(bad)


def test_a_twelve_digit_timestamp_is_judged_by_its_age_and_a_longer_one_is_invalid():
    # Twelve digits are read (Unix seconds have 10 until the year 2286); past that the
    # header is refused before any conversion.
    secret = generate_secret()
    far = 10**11
    headers = headers_for(secret, "evt_1", far, "{}")
    assert verify(secret, headers, "{}", now=far) == {}
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(secret, headers, "{}", now=1_700_000_000)
    longer = headers_for(secret, "evt_1", 10 * far, "{}")
    with pytest.raises(WebhookVerificationError, match="invalid webhook-timestamp"):
        verify(secret, longer, "{}", now=10 * far)
