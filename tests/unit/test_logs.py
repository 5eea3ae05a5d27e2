"""The JSON log formatter: one line per record, no secrets, no card numbers."""

from __future__ import annotations

import json
import logging
import re
import sys

import pytest

from payorch.app.auth import issue_key
from payorch.domain.card_data import contains_card_number
from payorch.entrypoints.logs import JsonFormatter


def record(
    msg: str,
    *args: object,
    exc: BaseException | None = None,
    **extra: object,
) -> logging.LogRecord:
    exc_info = None
    if exc is not None:
        try:
            raise exc
        except BaseException:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("payorch.test", logging.INFO, __file__, 1, msg, args, exc_info)
    for name, value in extra.items():
        setattr(rec, name, value)
    return rec


def formatted(rec: logging.LogRecord) -> tuple[str, dict[str, str]]:
    line = JsonFormatter().format(rec)
    return line, json.loads(line)


@pytest.mark.parametrize(
    "text",
    [
        "first\nsecond",
        "first\r\nsecond",
        "first\rsecond",
        'ok\r\n{"level": "error", "msg": "forged line"}',
    ],
)
def test_line_breaks_in_a_message_are_stripped_so_no_line_can_be_forged(text):
    line, out = formatted(record("payment note: %s", text))
    assert "\n" not in line and "\r" not in line
    assert "\n" not in out["msg"] and "\r" not in out["msg"]
    assert out["msg"].startswith("payment note: first") or "forged line" in out["msg"]


def test_line_breaks_in_context_fields_and_tracebacks_are_stripped():
    _, out = formatted(
        record("boom", exc=ValueError("bad\nvalue"), request_id="r-1\r\nX-Injected: 1")
    )
    assert "\n" not in out["request_id"] and "\r" not in out["request_id"]
    assert "\n" not in out["exc"] and "\r" not in out["exc"]
    assert "ValueError" in out["exc"]


@pytest.mark.parametrize(
    "secret",
    [
        "sk_live_51HxYzAbCdEfGhIjKlMnOpQrSt",
        "sk_test_should_never_leak_123",
        "rk_live_51HxYzAbCdEfGhIjKl",
        "whsec_Zm9vYmFyYmF6cXV4",
        "ek_test_YWNjdF8xMDMyRDgyZVp2S1lsbzJDLDVaWmNKNFhoMHNxTU1UNkRYOWlqUWtOaGdaOHdDYXk0_00y1Y1e5zB",
        "ek_live_YWNjdF8xMDMyRDgyZVp2S1lsbzJD",
        issue_key().plaintext,
    ],
    ids=[
        "stripe-live", "stripe-test", "stripe-restricted", "webhook-secret",
        "stripe-ephemeral-test", "stripe-ephemeral-live", "payorch-api-key",
    ],
)  # fmt: skip
def test_secrets_are_redacted_wherever_they_appear(secret):
    rec = record(
        "calling with key=%s",
        secret,
        exc=RuntimeError(f"rejected {secret}"),
        processor=f"stripe ({secret})",
    )
    line, out = formatted(rec)
    assert secret not in line
    assert "[redacted]" in out["msg"] and "[redacted]" in out["exc"]
    assert "[redacted]" in out["processor"]


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_oPM1QakcQEwdeL4xfsbR2/n+Qs/qAI+BGWCYo1g4WXQ=",
        "whsec_+7UgOhLNZkz3NXZuRxKCrLoGJ2CvR0t8vCQVzI9TrqI=",
        "whsec_Ab/cDefGhIjKlMnOpQrStUvWxYz0123456789abcdefg=",
    ],
    ids=["slash-and-plus-inside", "plus-first", "slash-in-the-first-six"],
)
def test_no_part_of_a_webhook_signing_secret_reaches_a_log_line(secret):
    """Our secrets are standard base64 (generate_secret): `+`, `/` and `=` are part of
    them, so a redaction that stops at one leaves the rest of the key in the log."""
    rec = record("signing with %s", secret, exc=RuntimeError(f"failed with {secret}"))
    line, out = formatted(rec)
    key = secret.removeprefix("whsec_")
    pieces = [p for p in re.split(r"[+/=]", key) if len(p) >= 4]
    assert pieces and not [p for p in pieces if p in line], line
    assert out["msg"] == "signing with whsec_[redacted]"


@pytest.mark.parametrize(
    ("client_secret", "kept"),
    [
        ("pi_3MtwBwLkdIwHu7ix28a3tqPa_secret_YrKJUKribcBjcG8HVhfZluoGH", "pi_3MtwBwLkdIwHu7ix28a3tqPa"),
        ("seti_1Mm8s8LkdIwHu7ix0OXBfTRG_secret_NXDICkPqPeiBTAFqWmkbff09lRmSVXe", "seti_1Mm8s8LkdIwHu7ix0OXBfTRG"),
    ],
    ids=["payment-intent", "setup-intent"],
)  # fmt: skip
def test_a_stripe_client_secret_is_redacted_but_its_intent_id_kept(client_secret, kept):
    """A client secret lets a browser confirm the intent: a secret, unlike the intent's id."""
    rec = record(
        "stripe answered %s",
        client_secret,
        exc=RuntimeError(f"bad {client_secret}"),
        payment_id=client_secret,
    )
    line, out = formatted(rec)
    assert client_secret.split("_secret_")[1] not in line
    assert out["msg"] == f"stripe answered {kept}_secret_[redacted]"
    assert out["payment_id"] == f"{kept}_secret_[redacted]"


def test_a_client_secret_in_a_3ds_return_url_is_redacted_and_the_url_kept():
    url = (
        "https://shop.example/return?payment_intent=pi_3Mtw"
        "&payment_intent_client_secret=pi_3Mtw_secret_YrKJUKribcBjcG8H&redirect_status=succeeded"
    )
    _, out = formatted(record("returned to %s", url))
    assert out["msg"] == (
        "returned to https://shop.example/return?payment_intent=pi_3Mtw"
        "&payment_intent_client_secret=pi_3Mtw_secret_[redacted]&redirect_status=succeeded"
    )


def test_an_ephemeral_key_is_redacted_to_its_end_and_the_text_around_it_kept():
    """An ephemeral key (`ek_...`, handed to a mobile SDK) acts for its customer."""
    key = "ek_test_YWNjdF8xMDMyRDgyZVp2S1lsbzJD_00y1Y1e5zB"
    _, out = formatted(record("issued %s for cus_NffrFeUfNV2Hib, then check_status", key))
    assert out["msg"] == "issued ek_[redacted] for cus_NffrFeUfNV2Hib, then check_status"


@pytest.mark.parametrize(
    "text",
    [
        "check_payment_status failed",
        "req_3MtwBwLkdIwHu7ix28a3tqPa",
        "seek_forward_in_stream",
        "the week_of_year column",
        "ek_ alone, or ek_abc",
    ],
)
def test_words_and_ids_that_merely_hold_ek_are_not_redacted(text):
    _, out = formatted(record("note: %s", text))
    assert out["msg"] == f"note: {text}"


def test_a_masked_stripe_key_quoted_by_an_error_message_is_redacted_too():
    # Stripe answers a bad key with "Invalid API Key provided: sk_test_****...._123".
    line, _ = formatted(record("stripe said: Invalid API Key provided: sk_test_**********_123"))
    assert "sk_test_" not in line


@pytest.mark.parametrize(
    "card",
    ["4242424242424242", "4242 4242 4242 4242", "4000-0566-5566-5556", "378282246310005"],
)
def test_card_numbers_are_removed_from_messages_arguments_fields_and_tracebacks(card):
    rec = record(
        "customer typed %s",
        card,
        exc=ValueError(f"not a token: {card}"),
        payment_id=f"pay_{card}",
        merchant_id="m_1",
    )
    line, out = formatted(rec)
    assert card not in line
    assert not contains_card_number(line)
    assert "[card number removed]" in out["msg"]
    assert "[card number removed]" in out["exc"]


def test_two_card_numbers_in_one_digit_run_are_both_removed_from_a_log_line():
    line, out = formatted(record("customer typed %s", "4242 4242 4242 4242 4000 0566 5566 5556"))
    assert "5556" not in line and "4242" not in line
    assert out["msg"] == "customer typed [card number removed] [card number removed]"


def test_request_payment_and_merchant_ids_are_kept_as_fields():
    rec = record(
        "payment settled",
        request_id="order-17",
        payment_id="pay_0123abcd",
        merchant_id="m_1",
        rpc="/payments.orchestrator.v1.PaymentOrchestrator/CreatePayment",
        code=0,
    )
    _, out = formatted(rec)
    assert out["msg"] == "payment settled"
    assert out["request_id"] == "order-17"
    assert out["payment_id"] == "pay_0123abcd"
    assert out["merchant_id"] == "m_1"
    assert out["rpc"].endswith("/CreatePayment")
    assert out["code"] == "0"
    assert out["level"] == "info" and out["logger"] == "payorch.test"


def test_ordinary_numbers_are_not_mistaken_for_card_numbers():
    _, out = formatted(record("took %d ms for %s minor units", 1234, "1999"))
    assert out["msg"] == "took 1234 ms for 1999 minor units"
