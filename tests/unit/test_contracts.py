"""The contract catalog, violations as stored, and the retrospective's mismatch rule."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payorch.domain import contracts
from payorch.domain.card_data import contains_card_number, luhn_valid
from payorch.domain.contracts import (
    CATALOG,
    COMPLAINT_CATEGORIES,
    UNATTRIBUTED,
    attempt_violation,
    complaint_contract,
    contract,
    is_mismatch,
    new_violation,
    redact_secrets,
    scrub,
)
from payorch.domain.payment import Attempt, RawError
from payorch.domain.request import Severity
from payorch.domain.results import ErrorCode, Outcome
from payorch.domain.retrospective import build_retrospective

SRC = Path(__file__).resolve().parents[2] / "src" / "payorch"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
VISA = "4242 4242 4242 4242"


def test_every_contract_id_the_code_names_is_in_the_catalog():
    named: set[str] = set()
    for path in SRC.rglob("*.py"):
        named |= set(
            re.findall(
                r'"((?:input|plan|policy|router|processor|rpc|idempotency)/[a-z_]+)"',
                path.read_text(),
            )
        )
    assert named, "the scan found nothing: the pattern is wrong"
    assert named <= set(CATALOG), sorted(named - set(CATALOG))


def test_the_catalog_has_the_issues_contracts_each_with_an_owner_and_a_description():
    wanted = {
        "router/timeout", "plan/coverage", "input/currency", "input/amount", "input/card_number",
        "input/method_alias", "processor/unmapped_error", "processor/invalid_request",
        "idempotency/conflict", "rpc/unhandled_exception", "rpc/deadline_exceeded",
        "rpc/latency_slo", "policy/method", "policy/currency",
    }  # fmt: skip
    assert wanted <= set(CATALOG)
    for c in CATALOG.values():
        assert c.owner and c.description and isinstance(c.severity, Severity)


def test_an_unknown_contract_id_is_still_recorded_with_a_stand_in():
    c = contract("made/up")
    assert c.id == "made/up" and c.severity is Severity.WARNING and c.owner


def test_a_violation_never_keeps_card_digits_keys_or_line_breaks():
    v = new_violation(
        "cv_1",
        "input/card_number",
        message=f"merchant sent {VISA}\r\nand sk_live_abcdef123456",
        request_id=f"req {VISA}",
        merchant_id="m_1\n",
        at=T0,
    )
    for text in (v.message, v.request_id, v.merchant_id):
        assert "4242" not in text and "\n" not in text and "\r" not in text
    assert "sk_live_abcdef123456" not in v.message
    assert v.severity is Severity.CRITICAL and v.owner == CATALOG["input/card_number"].owner


def test_a_violation_and_a_complaint_keep_no_stripe_ephemeral_key():
    key = "ek_live_YWNjdF8xMDMyRDgyZVp2S1lsbzJD"
    v = new_violation(
        "cv_1", "input/malformed", message=f"app sent {key}", request_id=key,
        merchant_id="", at=T0,
    )  # fmt: skip
    assert v.message == "app sent ek_[redacted]" and v.request_id == "ek_[redacted]"
    assert "YWNjdF8x" not in scrub(f"the app logged {key} on check_out", 100)


def test_a_violation_keeps_no_part_of_a_webhook_signing_secret():
    # Standard base64, as generate_secret makes them: `+` first, `/` inside, `=` last.
    secret = "whsec_+7UgOhLNZkz3NXZuRxKCrLoGJ2Cv/R0t8vCQVzI9TrqI="
    v = new_violation(
        "cv_1", "input/malformed", message=f"pasted {secret}", request_id="", merchant_id="", at=T0
    )
    assert v.message == "pasted whsec_[redacted]"


def test_a_violation_and_a_complaint_keep_no_stripe_client_secret():
    pi = "pi_3MtwBwLkdIwHu7ix28a3tqPa_secret_YrKJUKribcBjcG8HVhfZluoGH"
    seti = "seti_1Mm8s8LkdIwHu7ix0OXBfTRG_secret_NXDICkPqPeiBTAFqWmkbff09lRmSVXe"
    v = new_violation(
        "cv_1", "input/malformed", message=f"got {pi} and {seti}", request_id=pi,
        merchant_id="", at=T0,
    )  # fmt: skip
    assert v.message == (
        "got pi_3MtwBwLkdIwHu7ix28a3tqPa_secret_[redacted]"
        " and seti_1Mm8s8LkdIwHu7ix0OXBfTRG_secret_[redacted]"
    )
    assert v.request_id == "pi_3MtwBwLkdIwHu7ix28a3tqPa_secret_[redacted]"
    # Complaints (and so the retrospective's reports) are scrubbed by the same function.
    assert "YrKJUK" not in scrub(f"my customer's page showed {pi}", 100)


def test_a_violation_keeps_no_card_of_a_digit_run_holding_two():
    two = "4242424242424242-4000056655665556"
    v = new_violation(
        "cv_1", "input/malformed", message=f"sent {two}", request_id=two, merchant_id="", at=T0
    )
    for text in (v.message, v.request_id):
        assert "4242" not in text and "5556" not in text


def test_a_violation_field_cut_to_its_length_never_ends_in_a_card_number():
    # 17 digits failing Luhn at the cut; their first 16 are a Visa test card.
    card = "4000056655665556"
    tail = card + next(d for d in "0123456789" if not luhn_valid(card + d))
    v = new_violation(
        "cv_1", "input/malformed", message="x" * 984 + tail, request_id="r" * 239 + tail,
        merchant_id="", at=T0,
    )  # fmt: skip
    assert len(v.message) <= 1000 and len(v.request_id) <= 255
    assert not contains_card_number(v.message) and not contains_card_number(v.request_id)


def test_a_violation_message_is_bounded():
    v = new_violation(
        "cv_1", "input/amount", message="x" * 5000, request_id="", merchant_id="", at=T0
    )
    assert len(v.message) == 1000


def _attempt(
    code: ErrorCode, raw: RawError | None = None, outcome=Outcome.HARD, operation="authorize"
) -> Attempt:
    return Attempt(1, "sim", "k", T0, T0, 12, outcome, code, raw or RawError(), operation=operation)


MOVED = RawError(type="invalid_request_error", code="payment_intent_unexpected_state")


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (_attempt(ErrorCode.UNMAPPED, RawError(type="weird_error")), "processor/unmapped_error"),
        (
            _attempt(ErrorCode.CARD_DECLINED, RawError(type="card_error", decline_code="new_code")),
            "processor/unmapped_error",
        ),
        (
            _attempt(ErrorCode.INVALID_REQUEST, RawError(type="invalid_request_error")),
            "processor/invalid_request",
        ),
        (_attempt(ErrorCode.TIMEOUT, outcome=Outcome.UNKNOWN), "router/timeout"),
        # A capture or void the intent's own change beat (a lapse, the dashboard): a lost
        # race, looked up after; an authorize of an intent in that state is ours.
        (_attempt(ErrorCode.INVALID_REQUEST, MOVED, operation="capture"), None),
        (_attempt(ErrorCode.INVALID_REQUEST, MOVED, operation="void"), None),
        (_attempt(ErrorCode.INVALID_REQUEST, MOVED), "processor/invalid_request"),
        (
            _attempt(ErrorCode.TIMEOUT, outcome=Outcome.UNKNOWN, operation="refund"),
            "router/timeout",
        ),
        (
            _attempt(
                ErrorCode.CARD_DECLINED, RawError(type="card_error", decline_code="generic_decline")
            ),
            None,
        ),
        (_attempt(ErrorCode.RATE_LIMITED, outcome=Outcome.SOFT), None),
        (_attempt(ErrorCode.NONE, outcome=Outcome.SUCCESS), None),
    ],
)
def test_processor_calls_that_break_a_contract_are_named(attempt, expected):
    found = attempt_violation(attempt)
    assert (found[0] if found else None) == expected


def test_a_complaint_counts_against_its_contract_its_category_or_nothing():
    assert complaint_contract("plan/coverage", "") == "plan/coverage"
    assert complaint_contract("", "slow_or_timed_out") == "router/timeout"
    assert complaint_contract("", "") == UNATTRIBUTED
    assert set(COMPLAINT_CATEGORIES.values()) <= set(CATALOG)


@pytest.mark.parametrize(
    ("violations", "reports", "mismatch"),
    [
        (932, 8, False),
        (41, 17, True),
        (0, 1, True),
        (10, 1, True),
        (11, 1, False),
        (5, 0, False),
        (0, 0, False),
    ],
)
def test_the_mismatch_rule(violations, reports, mismatch):
    assert is_mismatch(violations, reports) is mismatch


SEED_YAML = """\
violations:
  - id: router/timeout
    count: 932
    external_reports: 8
    mismatch: false
  - id: plan/coverage
    count: 41
    external_reports: 17
    mismatch: true
"""


def test_the_retrospective_reproduces_the_seed_example():
    report = build_retrospective(
        T0 - timedelta(days=14),
        T0,
        {"router/timeout": 932, "plan/coverage": 41},
        {"router/timeout": 8, "plan/coverage": 17},
    )
    assert [(e.contract_id, e.count, e.external_reports, e.mismatch) for e in report.entries] == [
        ("router/timeout", 932, 8, False),
        ("plan/coverage", 41, 17, True),
    ]
    assert [x.contract_id for x in report.escalations] == ["plan/coverage"]
    assert report.escalations[0].owner == CATALOG["plan/coverage"].owner
    text = report.to_yaml()
    assert SEED_YAML in text
    assert text.startswith('window:\n  since: "2026-02-15T00:00:00+00:00"\n')
    assert "escalations:\n  - id: plan/coverage\n    owner: plans\n    reason: " in text


def test_complaints_nothing_inside_saw_are_escalated():
    report = build_retrospective(T0 - timedelta(days=14), T0, {}, {UNATTRIBUTED: 3})
    assert [(e.contract_id, e.count, e.mismatch) for e in report.entries] == [
        (UNATTRIBUTED, 0, True)
    ]
    assert "no violation recorded" in report.escalations[0].reason


def test_an_empty_retrospective_is_valid_yaml_with_empty_lists():
    text = build_retrospective(T0 - timedelta(days=14), T0, {}, {}).to_yaml()
    assert "violations: []\n" in text and text.endswith("escalations: []\n")


# Pieces that make the secret patterns match, nearly match and fail at a word boundary.
_PIECES = st.sampled_from(
    ["sk_", "rk_", "ek_", "po_", "whsec_", "pi_", "seti_", "_secret_", "_", "ask_", "x", "Ab9", "+/=",
     "-", "*", " ", "\n", ".", "é", "4242"]
)  # fmt: skip


@given(st.lists(_PIECES, max_size=12).map("".join))
def test_redacting_secrets_skips_only_texts_neither_pattern_can_match(text):
    """redact_secrets looks for a literal before each pattern's scan (a log line's hot
    path): what it returns is what both substitutions make of any text."""
    both = contracts._SECRET.sub(
        lambda m: f"{m[1] or m[2]}_[redacted]",
        contracts._CLIENT_SECRET.sub(lambda m: f"{m[1]}_[redacted]", text),
    )
    assert redact_secrets(text) == both
