"""Permissive outside, strict inside: a loose payment request -> CoreRequest + issues."""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from payorch.domain.card_data import clip, contains_card_number
from payorch.domain.json_text import encoder
from payorch.domain.money import (
    MAX_AMOUNT_MINOR,
    Currency,
    InvalidAmount,
    Money,
    UnknownCurrency,
    parse_decimal_amount,
)
from payorch.domain.payment import MethodType

# A payment's metadata is forwarded to its processor (Stripe: the PaymentIntent's, which
# takes 50 keys of at most 40 characters, no `[` or `]` in a key, values of at most 500)
# beside payorch's own keys, all under OWN_METADATA_PREFIX (payorch_payment_id,
# payorch_step, payorch_merchant_id): they win, so a caller's key may not take that
# prefix, and the caller's keys leave room for them. So nothing forwarded is refused.
PROCESSOR_METADATA_KEYS = 50
OWN_METADATA_PREFIX = "payorch_"
OWN_METADATA_KEYS = 3
MAX_METADATA_KEYS = PROCESSOR_METADATA_KEYS - OWN_METADATA_KEYS
MAX_METADATA_KEY_LEN = 40
MAX_METADATA_VALUE_LEN = 500
MAX_REQUEST_ID_LEN = 255
MAX_METHODS = 8

_MERCHANT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
_TOKEN_RE = re.compile(r"^(pm|tok|card|src)_[A-Za-z0-9_]{1,200}\Z")
_CUSTOMER_RE = re.compile(r"^cus_[A-Za-z0-9_]{1,200}\Z")
_PRINTABLE_RE = re.compile(r"^[\x21-\x7e]+\Z")
_METHOD_SEPARATORS_RE = re.compile(r"[\s\-]+")
# json.dumps(body, separators=(",", ":")), its encoder built once.
_COMPACT_JSON = encoder(separators=(",", ":"))

METHOD_ALIASES: dict[str, MethodType] = {
    "card": MethodType.CARD,
    "cards": MethodType.CARD,
    "credit_card": MethodType.CARD,
    "debit_card": MethodType.CARD,
    "creditcard": MethodType.CARD,
    "apple_pay": MethodType.APPLE_PAY,
    "applepay": MethodType.APPLE_PAY,
    "google_pay": MethodType.GOOGLE_PAY,
    "googlepay": MethodType.GOOGLE_PAY,
    "gpay": MethodType.GOOGLE_PAY,
}


class Severity(enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class ValidationIssue:
    field: str
    message: str
    contract_id: str
    fatal: bool
    severity: Severity = Severity.WARNING


@dataclass(slots=True)
class RawMethodInput:
    method: str = ""
    token: str = ""
    amount_minor: int | None = None
    amount_decimal: str | None = None
    customer_id: str = ""


@dataclass(slots=True)
class RawPaymentRequest:
    """What the caller sent, field by field, before any judgement."""

    merchant_id: str = ""
    request_id: str = ""
    amount_minor: int | None = None
    amount_decimal: str | None = None
    currency: str = ""
    payment_method: str = ""
    method: str = ""
    methods: list[RawMethodInput] = field(default_factory=list)
    customer_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    off_session: bool = False
    authorize_only: bool = False
    # Ask the processor to keep the payment method on the customer for later off-session
    # charges (an installment plan's first charge: the later installments reuse it).
    save_for_off_session: bool = False


@dataclass(frozen=True, slots=True)
class MethodInput:
    method: MethodType
    token: str
    amount_minor: int | None
    customer_id: str


@dataclass(frozen=True, slots=True)
class CoreRequest:
    """The strict request every later layer works with."""

    merchant_id: str
    request_id: str
    amount: Money
    methods: tuple[MethodInput, ...]
    metadata: dict[str, str]
    customer_id: str
    off_session: bool
    issues: tuple[ValidationIssue, ...] = ()
    authorize_only: bool = False
    save_for_off_session: bool = False

    def fingerprint(self) -> str:
        """Hash of everything that defines the payment (not the request id), but whether
        the method is saved for later: that is how the processor keeps the card, not
        what is charged, and a first charge of a plan made before it was asked for is
        replayed by its retry, not refused as another payment."""
        body = {
            "amount": self.amount.amount_minor,
            "currency": self.amount.currency.code,
            "methods": [
                [m.method._value_, m.token, m.amount_minor, m.customer_id] for m in self.methods
            ],
            "metadata": sorted(self.metadata.items()),
            "customer": self.customer_id,
            "off_session": self.off_session,
            "authorize_only": self.authorize_only,
        }
        return hashlib.sha256(_COMPACT_JSON(body).encode()).hexdigest()


class RequestRejected(ValueError):
    """Fatal validation issues: nothing is persisted, the caller gets field violations."""

    def __init__(self, issues: list[ValidationIssue]):
        self.issues = issues
        super().__init__("; ".join(f"{i.field}: {i.message}" for i in issues))


def parse_method(raw: str) -> MethodType | None:
    key = _METHOD_SEPARATORS_RE.sub("_", raw.strip().lower())
    return METHOD_ALIASES.get(key) or METHOD_ALIASES.get(key.replace("_", ""))


class _Collector:
    def __init__(self) -> None:
        self.issues: list[ValidationIssue] = []

    def fatal(self, field_: str, message: str, contract: str) -> None:
        self.issues.append(ValidationIssue(field_, message, contract, True, Severity.ERROR))

    def note(self, field_: str, message: str, contract: str) -> None:
        self.issues.append(ValidationIssue(field_, message, contract, False, Severity.INFO))

    @property
    def has_fatal(self) -> bool:
        return any(i.fatal for i in self.issues)


# The longest value each field can validly hold. A longer one is not scanned for card
# numbers (the scan is linear, but a megabyte of digit groups would still hold the
# event loop): the checks below refuse it for its length and never quote it back.
MAX_MERCHANT_LEN = 64
MAX_TOKEN_LEN = 205  # "pm_" and 200 characters (_TOKEN_RE)
MAX_CUSTOMER_LEN = 204  # "cus_" and 200 characters (_CUSTOMER_RE)
# Never valid past a few characters (a 3-letter code, an alias such as "credit card",
# 16 digits and 4 decimals), scanned up to 64 all the same: a card number sent there
# is then reported as one.
MAX_CURRENCY_LEN = MAX_METHOD_LEN = MAX_DECIMAL_LEN = 64


def _scan_card_numbers(raw: RawPaymentRequest, c: _Collector) -> None:
    # (field, value, the longest valid value)
    fields: list[tuple[str, str, int]] = [
        ("merchant_id", raw.merchant_id, MAX_MERCHANT_LEN),
        ("request_id", raw.request_id, MAX_REQUEST_ID_LEN),
        ("amount_decimal", raw.amount_decimal or "", MAX_DECIMAL_LEN),
        ("currency", raw.currency, MAX_CURRENCY_LEN),
        ("payment_method", raw.payment_method, MAX_TOKEN_LEN),
        ("method", raw.method, MAX_METHOD_LEN),
        ("customer_id", raw.customer_id, MAX_CUSTOMER_LEN),
    ]
    if len(raw.methods) <= MAX_METHODS:
        for i, m in enumerate(raw.methods):
            prefix = f"methods[{i}]"
            fields += [
                (f"{prefix}.method", m.method, MAX_METHOD_LEN),
                (f"{prefix}.token", m.token, MAX_TOKEN_LEN),
                (f"{prefix}.amount_decimal", m.amount_decimal or "", MAX_DECIMAL_LEN),
                (f"{prefix}.customer_id", m.customer_id, MAX_CUSTOMER_LEN),
            ]
    if len(raw.metadata) <= MAX_METADATA_KEYS:
        for k, v in raw.metadata.items():
            # A key is quoted back with its over-long value: scanned all the same.
            fields += [
                ("metadata", k, MAX_METADATA_KEY_LEN),
                ("metadata", v, MAX_METADATA_VALUE_LEN),
            ]
    scanned = [(n, v) for n, v, limit in fields if len(v) <= limit or len(v.strip()) <= limit]
    # One scan of every field at once (a line break ends any digit run, so no number
    # spans two fields); only a request that holds a card number is scanned by field.
    if not contains_card_number("\n".join([value for _, value in scanned])):
        return
    seen: set[str] = set()
    for name, value in scanned:
        if name not in seen and contains_card_number(value):
            seen.add(name)
            c.fatal(
                name,
                "looks like a card number: send a payment method token (pm_...), never card data",
                "input/card_number",
            )


def merchant_id_issues(merchant_id: str, field_: str = "merchant_id") -> list[ValidationIssue]:
    """What is wrong with a merchant id an operator names (a merchant's own comes from
    its credential): 1-64 letters, digits, '_', '-' or '.', and no card number."""
    c = _Collector()
    rule = "must be 1-64 letters, digits, '_', '-' or '.'"
    if not merchant_id:
        c.fatal(field_, "is required for an ops caller", "input/merchant")
    elif len(merchant_id) > MAX_MERCHANT_LEN:
        c.fatal(field_, rule, "input/merchant")
    elif contains_card_number(merchant_id):
        c.fatal(field_, "looks like a card number: never send card data", "input/card_number")
    elif not _MERCHANT_RE.match(merchant_id):
        c.fatal(field_, rule, "input/merchant")
    return c.issues


def idempotency_key_issues(key: str, field_: str = "request_id") -> list[ValidationIssue]:
    """What is wrong with an idempotency key taken as given (not trimmed: a retry must
    find the same key): 1-255 printable ASCII characters holding no card number."""
    c = _Collector()
    if not key:
        c.fatal(field_, "is required: it is the idempotency key", "input/request_id")
    elif len(key) > MAX_REQUEST_ID_LEN or not _PRINTABLE_RE.match(key):
        message = f"must be 1-{MAX_REQUEST_ID_LEN} printable ASCII characters"
        c.fatal(field_, message, "input/request_id")
    elif contains_card_number(key):
        c.fatal(field_, "looks like a card number: never send card data", "input/card_number")
    return c.issues


def card_method_issues(token: str, customer_id: str) -> list[ValidationIssue]:
    """What parse_payment_request finds wrong with a one-card payment's token and
    customer id (fields payment_method and customer_id), for a request that has them
    beside fields of its own."""
    c = _Collector()
    _scan_card_numbers(RawPaymentRequest(payment_method=token, customer_id=customer_id), c)
    if not c.has_fatal:
        _parse_token(c, "payment_method", token)
        _parse_customer(c, "customer_id", customer_id)
    return c.issues


def customer_id_issues(customer_id: str) -> list[ValidationIssue]:
    """What parse_payment_request finds wrong with a customer id (field customer_id),
    for a request that names one alone: a filter by customer."""
    c = _Collector()
    _scan_card_numbers(RawPaymentRequest(customer_id=customer_id), c)
    if not c.has_fatal:
        _parse_customer(c, "customer_id", customer_id)
    return c.issues


def _parse_amount(
    c: _Collector, field_: str, minor: int | None, decimal: str | None, currency: Currency | None
) -> int | None:
    if minor is not None:
        if minor <= 0:
            c.fatal(field_, "must be greater than zero", "input/amount")
            return None
        if minor > MAX_AMOUNT_MINOR:
            c.fatal(field_, f"must be at most {MAX_AMOUNT_MINOR}", "input/amount")
            return None
        return minor
    if decimal is not None:
        if currency is None:
            return None
        if len(decimal.strip()) > MAX_DECIMAL_LEN:
            c.fatal(field_, "is not a decimal amount", "input/amount")
            return None
        try:
            value = parse_decimal_amount(decimal, currency)
        except InvalidAmount as exc:
            c.fatal(field_, str(exc), "input/amount")
            return None
        if value <= 0:
            c.fatal(field_, "must be greater than zero", "input/amount")
            return None
        if value > MAX_AMOUNT_MINOR:
            c.fatal(field_, f"must be at most {MAX_AMOUNT_MINOR} minor units", "input/amount")
            return None
        c.note(field_, "amount given as a decimal string", "input/amount_format")
        return value
    return None


def _parse_token(c: _Collector, field_: str, token: str) -> str:
    stripped = token.strip()
    if not stripped:
        c.fatal(field_, "a payment method token is required", "input/payment_method")
    elif not _TOKEN_RE.match(stripped):
        c.fatal(
            field_, "must be a payment method token such as pm_card_visa", "input/payment_method"
        )
    return stripped


def parse_payment_request(raw: RawPaymentRequest) -> CoreRequest:
    """Parse or raise RequestRejected with every fatal issue found (not only the first)."""
    c = _Collector()
    _scan_card_numbers(raw, c)
    if c.has_fatal:
        raise RequestRejected(c.issues)

    merchant = raw.merchant_id.strip()
    if not merchant:
        c.fatal("merchant_id", "is required", "input/merchant")
    elif not _MERCHANT_RE.match(merchant):
        c.fatal("merchant_id", "must be 1-64 letters, digits, '_', '-' or '.'", "input/merchant")

    request_id = raw.request_id.strip()
    if not request_id:
        c.fatal("request_id", "is required: it is the idempotency key", "input/request_id")
    elif len(request_id) > MAX_REQUEST_ID_LEN or not _PRINTABLE_RE.match(request_id):
        c.fatal(
            "request_id",
            f"must be 1-{MAX_REQUEST_ID_LEN} printable ASCII characters",
            "input/request_id",
        )
    elif request_id != raw.request_id:
        c.note("request_id", "surrounding whitespace removed", "input/request_id")

    currency: Currency | None = None
    if not raw.currency.strip():
        c.fatal("currency", "is required (ISO-4217, e.g. USD)", "input/currency")
    elif len(raw.currency.strip()) > MAX_CURRENCY_LEN:
        c.fatal("currency", "is not an ISO-4217 currency code", "input/currency")
    else:
        try:
            currency = Currency.parse(raw.currency)
        except UnknownCurrency as exc:
            c.fatal("currency", str(exc), "input/currency")
        else:
            if raw.currency != currency.code:
                c.note("currency", f"normalized to {currency.code}", "input/currency")

    if raw.amount_minor is None and raw.amount_decimal is None:
        c.fatal("amount", "is required (amount_minor or amount_decimal)", "input/amount")
    total = _parse_amount(c, "amount", raw.amount_minor, raw.amount_decimal, currency)

    methods = _parse_methods(raw, c, currency)

    customer = _parse_customer(c, "customer_id", raw.customer_id)

    _check_metadata(raw.metadata, c)

    if c.has_fatal or currency is None or total is None:
        raise RequestRejected([i for i in c.issues if i.fatal])
    return CoreRequest(
        merchant_id=merchant,
        request_id=request_id,
        amount=Money(total, currency),
        methods=tuple(methods),
        metadata=dict(raw.metadata),
        customer_id=customer,
        off_session=raw.off_session,
        issues=tuple(c.issues),
        authorize_only=raw.authorize_only,
        save_for_off_session=raw.save_for_off_session,
    )


def _parse_customer(c: _Collector, field: str, raw: str) -> str:
    customer = raw.strip()
    if customer and not _CUSTOMER_RE.match(customer):
        c.fatal(field, "must be a processor customer id such as cus_123", "input/customer")
    return customer


def _parse_methods(
    raw: RawPaymentRequest, c: _Collector, currency: Currency | None
) -> list[MethodInput]:
    methods: list[MethodInput] = []
    if raw.methods:
        for name, given in (("payment_method", raw.payment_method), ("method", raw.method)):
            if given.strip():
                c.fatal(name, f"give either {name} or methods, not both", "input/method")
        if len(raw.methods) > MAX_METHODS:
            c.fatal("methods", f"at most {MAX_METHODS} methods", "input/method")
            return methods
        for i, m in enumerate(raw.methods):
            name = f"methods[{i}]"
            method = _parse_method_name(c, f"{name}.method", m.method)
            token = _parse_token(c, f"{name}.token", m.token)
            amount = _parse_amount(c, f"{name}.amount", m.amount_minor, m.amount_decimal, currency)
            customer = _parse_customer(c, f"{name}.customer_id", m.customer_id)
            if method is not None:
                methods.append(MethodInput(method, token, amount, customer))
        return methods
    method = _parse_method_name(c, "method", raw.method)
    token = _parse_token(c, "payment_method", raw.payment_method)
    if method is not None:
        methods.append(MethodInput(method, token, None, ""))
    return methods


def _parse_method_name(c: _Collector, field_: str, raw: str) -> MethodType | None:
    if not raw.strip():
        return MethodType.CARD
    if len(raw.strip()) > MAX_METHOD_LEN:
        c.fatal(field_, "unknown payment method", "input/method")
        return None
    method = parse_method(raw)
    if method is None:
        c.fatal(field_, f"unknown payment method {clip(raw.strip(), 32)!r}", "input/method")
    elif method._value_ != raw:
        c.note(
            field_, f"alias {clip(raw.strip(), 32)!r} read as {method.value}", "input/method_alias"
        )
    return method


def _metadata_key_ok(key: str) -> bool:
    """A key the processor takes and payorch's own do not use."""
    return (
        0 < len(key) <= MAX_METADATA_KEY_LEN
        and "[" not in key
        and "]" not in key
        and not key.lower().startswith(OWN_METADATA_PREFIX)
    )


def _check_metadata(metadata: dict[str, str], c: _Collector) -> None:
    if len(metadata) > MAX_METADATA_KEYS:
        c.fatal(
            "metadata",
            f"at most {MAX_METADATA_KEYS} keys (the processor takes"
            f" {PROCESSOR_METADATA_KEYS}, {OWN_METADATA_KEYS} of them payorch's own)",
            "input/metadata",
        )
        return
    # Every entry judged: a bad key once (a key is not quoted back), each long value by key.
    if not all(_metadata_key_ok(key) for key in metadata):
        c.fatal(
            "metadata",
            f"keys must be 1-{MAX_METADATA_KEY_LEN} characters without [ or ], and not"
            f" start with {OWN_METADATA_PREFIX} (reserved for payorch's own)",
            "input/metadata",
        )
    for key, value in metadata.items():
        if len(value) > MAX_METADATA_VALUE_LEN and 0 < len(key) <= MAX_METADATA_KEY_LEN:
            c.fatal(
                f"metadata[{key}]",
                f"values must be at most {MAX_METADATA_VALUE_LEN} characters",
                "input/metadata",
            )


def processor_metadata(caller: Mapping[str, str], own: Mapping[str, str]) -> dict[str, str]:
    """The metadata a processor is sent for a payment: the caller's entries (empty values
    left out, as a processor reads them as none), then payorch's own `own`, which win.
    A request validated here has every entry sent; a payment stored under older rules
    loses what the processor would refuse (a key it does not take, entries past its
    limit), so its charge or lookup is never refused for its metadata."""
    room = PROCESSOR_METADATA_KEYS - len(own)
    kept = [
        (k, v)
        for k, v in caller.items()
        if v and _metadata_key_ok(k) and len(v) <= MAX_METADATA_VALUE_LEN and k not in own
    ]
    return {**dict(kept[: max(room, 0)]), **own}
