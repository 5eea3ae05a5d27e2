"""The system's contracts: what each promises, how bad breaking it is, who owns it.

A violation is one observed break of a contract, scrubbed before anyone stores it.
The retrospective compares violations with what merchants complain about: a contract
whose complaints the internal signals under-count is a mismatch, to be escalated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from payorch.domain.card_data import clip, redact_card_numbers
from payorch.domain.classification import ADAPTER_ERROR, DECLINE_CODES
from payorch.domain.payment import Attempt, RawError
from payorch.domain.request import Severity
from payorch.domain.results import ErrorCode

MAX_MESSAGE_LEN = 1000
MAX_ID_LEN = 255
MAX_MERCHANT_LEN = 64
MAX_CONTRACT_LEN = 64

# Teams that own contracts.
API = "api"
PLANS = "plans"
ROUTING = "routing"
INTEGRATIONS = "processor-integrations"
CORE = "payments-core"
PLATFORM = "platform"


@dataclass(frozen=True, slots=True)
class Contract:
    id: str
    description: str
    severity: Severity
    owner: str


def _c(contract_id: str, severity: Severity, owner: str, description: str) -> Contract:
    return Contract(contract_id, description, severity, owner)


_INFO, _WARN, _ERR, _CRIT = Severity.INFO, Severity.WARNING, Severity.ERROR, Severity.CRITICAL

CATALOG: dict[str, Contract] = {
    c.id: c
    for c in (
        # Input: the caller's request against the API's permissive-but-bounded contract.
        # Severity is the catalog's for a refused request; a non-fatal note (an alias,
        # a normalized code) is recorded as info whatever the catalog says.
        _c("input/malformed", _ERR, API, "The request is a valid message with valid fields."),
        _c("input/card_number", _CRIT, API, "No card number ever reaches us: tokens only."),
        _c("input/currency", _WARN, API, "Currency is an ISO-4217 code in upper case."),
        _c("input/amount", _WARN, API, "Amount is positive minor units within the maximum."),
        _c("input/amount_format", _INFO, API, "Amount is sent in minor units, not a decimal."),
        _c("input/method_alias", _INFO, API, "Payment method is sent by its canonical name."),
        _c("input/method", _WARN, API, "Payment method is one we support, given once."),
        _c("input/payment_method", _WARN, API, "A processor token such as pm_... is sent."),
        _c("input/merchant", _WARN, API, "Merchant id is 1-64 safe characters."),
        _c("input/request_id", _WARN, API, "Request id (idempotency key) is printable ASCII."),
        _c("input/customer", _WARN, API, "Customer id is a processor customer id."),
        _c("input/metadata", _WARN, API, "Metadata stays within its key and size limits."),
        _c(
            "input/deadline",
            _WARN,
            API,
            "The caller's deadline leaves time for a processor to answer (MIN_CALL_MS).",
        ),
        # Plans and merchant policy.
        _c("plan/coverage", _ERR, PLANS, "The plan's steps cover the total within limits."),
        _c("policy/method", _WARN, PLANS, "Only methods the merchant enabled are used."),
        _c("policy/currency", _WARN, PLANS, "Only currencies the merchant accepts are used."),
        # Router and processors.
        _c("router/timeout", _WARN, ROUTING, "A processor answers within the call timeout."),
        _c(
            "processor/unmapped_error",
            _ERR,
            INTEGRATIONS,
            "Every processor answer has a row in the classification table.",
        ),
        _c(
            "processor/invalid_request",
            _ERR,
            INTEGRATIONS,
            "We never send a processor a request it calls invalid.",
        ),
        _c(
            "processor/adapter_raised",
            _ERR,
            INTEGRATIONS,
            "A processor adapter answers every call with data and never raises.",
        ),
        _c(
            "processor/not_configured",
            _ERR,
            PLATFORM,
            "Every processor a payment is held at stays configured until it settles.",
        ),
        # Idempotency.
        _c(
            "idempotency/conflict",
            _WARN,
            CORE,
            "A request id is reused only with the same parameters.",
        ),
        # The RPC surface.
        _c("rpc/unhandled_exception", _CRIT, PLATFORM, "No call ends in an unhandled error."),
        # Not a call refused at once for a deadline too short to start (input/deadline).
        _c("rpc/deadline_exceeded", _ERR, PLATFORM, "Calls finish within the caller's deadline."),
        _c("rpc/latency_slo", _WARN, PLATFORM, "Calls finish within the latency SLO."),
    )
}

UNCATALOGUED_OWNER = PLATFORM

# Complaint categories a merchant may pick instead of a contract id, and the contract
# each one is counted against in the retrospective.
COMPLAINT_CATEGORIES: dict[str, str] = {
    "slow_or_timed_out": "router/timeout",
    "payment_refused_by_plan": "plan/coverage",
    "method_not_accepted": "policy/method",
    "currency_not_accepted": "policy/currency",
    "wrong_amount": "input/amount",
    "unexplained_error": "processor/unmapped_error",
    "request_rejected": "input/malformed",
    "duplicate_request_refused": "idempotency/conflict",
    "server_error": "rpc/unhandled_exception",
}
# Complaints matching no contract are counted here: nothing inside saw them at all.
UNATTRIBUTED = "unattributed"

# A contract whose complaints reach this share of its violations (or that has
# complaints and no violations) is a mismatch: merchants feel more than we see.
MISMATCH_RATIO = 0.1


def contract(contract_id: str) -> Contract:
    """The catalog's contract, or a stand-in for an id it does not list (still recorded)."""
    found = CATALOG.get(contract_id)
    if found is not None:
        return found
    return Contract(contract_id, "not in the catalog", Severity.WARNING, UNCATALOGUED_OWNER)


def complaint_contract(contract_id: str, category: str) -> str:
    """The contract a complaint is counted against."""
    if contract_id:
        return contract_id
    return COMPLAINT_CATEGORIES.get(category, UNATTRIBUTED)


def is_mismatch(violations: int, external_reports: int) -> bool:
    """Merchants report a problem our own signals under-count (or never saw)."""
    if external_reports <= 0:
        return False
    return external_reports / max(violations, 1) >= MISMATCH_RATIO


_CRLF = re.compile(r"[\r\n\t]+")
# Keys of ours and of processors (Stripe masks them as sk_test_****_1234: still a tail).
# A Stripe ephemeral key (`ek_...`, given to a mobile SDK) acts for its customer.
# Our webhook secrets are standard base64 (`+`, `/`, `=`): stopping at one would leave
# the rest of the key, or, with one in its first six characters, all of it.
# `\b` keeps words that merely hold a prefix (`check_`, `seek_`) whole.
_SECRET = re.compile(r"\b(whsec)_[A-Za-z0-9+/=_\-*]{6,}|\b(sk|rk|ek|po)_[A-Za-z0-9_\-*]{6,}")
# A Stripe client secret (`pi_..._secret_...`, `seti_..._secret_...`) lets whoever holds
# it confirm the intent from a browser. The intent's id before it is no secret: kept.
_CLIENT_SECRET = re.compile(r"\b((?:pi|seti)_[A-Za-z0-9]+_secret)_[A-Za-z0-9_\-*]+")


def redact_secrets(text: str) -> str:
    """`sk_live_...`, `ek_test_...`, `whsec_...` -> `sk_[redacted]`, `ek_[redacted]`,
    `whsec_[redacted]`;
    `pi_123_secret_abc` -> `pi_123_secret_[redacted]`.

    Each pattern runs only on a text holding the literal it cannot match without: every
    log line passes here four times (message and ids), and a substring test costs a
    fraction of a scan that tries a word boundary at every character."""
    if "_" not in text:
        return text
    if "_secret_" in text:
        text = _CLIENT_SECRET.sub(lambda m: f"{m[1]}_[redacted]", text)
    if "sk_" in text or "rk_" in text or "ek_" in text or "po_" in text or "whsec_" in text:
        text = _SECRET.sub(lambda m: f"{m[1] or m[2]}_[redacted]", text)
    return text


def scrub(text: str, limit: int = MAX_MESSAGE_LEN) -> str:
    """Safe to store and show: one line, no card numbers, no keys, bounded. Cut before
    the scan (it reads no more than is kept) and after it with clip, which never cuts
    a number into a card number (a plain cut can: 17 digits failing Luhn, cut to 16)."""
    text = _CRLF.sub(" ", text[:limit])
    text = redact_secrets(text)
    return clip(redact_card_numbers(text), limit)


@dataclass(frozen=True, slots=True)
class ContractViolation:
    id: str
    contract_id: str
    request_id: str
    merchant_id: str
    severity: Severity
    owner: str
    message: str
    occurred_at: datetime


def new_violation(
    violation_id: str,
    contract_id: str,
    *,
    message: str,
    request_id: str,
    merchant_id: str,
    at: datetime,
    severity: Severity | None = None,
) -> ContractViolation:
    """A violation with the catalog's severity and owner; every text field scrubbed."""
    c = contract(contract_id)
    return ContractViolation(
        id=violation_id,
        contract_id=scrub(contract_id, MAX_CONTRACT_LEN),
        request_id=scrub(request_id, MAX_ID_LEN),
        merchant_id=scrub(merchant_id, MAX_MERCHANT_LEN),
        severity=severity or c.severity,
        owner=c.owner,
        message=scrub(message),
        occurred_at=at,
    )


def attempt_violation(attempt: Attempt) -> tuple[str, str] | None:
    """(contract id, message) when a processor call broke a contract."""
    raw = attempt.raw
    if raw.type == ADAPTER_ERROR:
        # Before the rows below: it is classified (unknown outcome, or not charged).
        return "processor/adapter_raised", f"{_where(attempt)}: {raw.message}"
    if attempt.error_code is ErrorCode.UNMAPPED or (
        raw.type == "card_error" and (raw.decline_code or raw.code) not in DECLINE_CODES
    ):
        return (
            "processor/unmapped_error",
            f"{_where(attempt)}: no classification row for {_said(raw)}",
        )
    if attempt.error_code is ErrorCode.INVALID_REQUEST and not _state_moved(attempt):
        return "processor/invalid_request", f"{_where(attempt)}: the processor refused {_said(raw)}"
    if attempt.error_code is ErrorCode.TIMEOUT:
        return "router/timeout", f"{_where(attempt)}: no answer within {attempt.latency_ms} ms"
    return None


# A capture or void of an intent that moved on without us: the hold lapsed, another
# call or the processor's dashboard captured or released it first. The processor calls
# the call "unexpected state", and settlement looks the intent up and records what it
# holds: the race is lost, not a request of ours the processor calls invalid.
_STATE_MOVED_CODE = "payment_intent_unexpected_state"
_SETTLING = frozenset({"capture", "void"})


def _state_moved(attempt: Attempt) -> bool:
    return attempt.operation in _SETTLING and attempt.raw.code == _STATE_MOVED_CODE


# Messages are built only for a violation: every attempt of every payment is checked.
def _where(attempt: Attempt) -> str:
    return f"{attempt.operation} on {attempt.processor}, attempt {attempt.number}"


def _said(raw: RawError) -> str:
    return f"{raw.type or '-'}/{raw.code or '-'}/{raw.decline_code or '-'} (HTTP {raw.http_status})"
