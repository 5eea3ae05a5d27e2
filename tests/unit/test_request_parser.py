"""parse_payment_request: permissive outside (notes), strict inside (fatal issues)."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest

from payorch.domain.card_data import contains_card_number, luhn_valid
from payorch.domain.money import MAX_AMOUNT_MINOR, Currency
from payorch.domain.payment import MethodType
from payorch.domain.request import (
    MAX_METADATA_KEYS,
    MAX_METHODS,
    CoreRequest,
    RawMethodInput,
    RawPaymentRequest,
    RequestRejected,
    ValidationIssue,
    idempotency_key_issues,
    merchant_id_issues,
    parse_payment_request,
)
from payorch.entrypoints.grpc.installments import _request_id_problems as plan_request_id_problems

PAN = "4242424242424242"
PAN_SPACED = "4000 0000 0000 0002"


def raw(**overrides: Any) -> RawPaymentRequest:
    base = RawPaymentRequest(
        merchant_id="shop_1",
        request_id="order-1001",
        amount_minor=1999,
        currency="USD",
        payment_method="pm_card_visa",
    )
    return replace(base, **overrides)


def parse(**overrides: Any) -> CoreRequest:
    return parse_payment_request(raw(**overrides))


def rejected(**overrides: Any) -> list[ValidationIssue]:
    with pytest.raises(RequestRejected) as info:
        parse_payment_request(raw(**overrides))
    return info.value.issues


def notes(request: CoreRequest, contract: str) -> list[ValidationIssue]:
    return [i for i in request.issues if i.contract_id == contract]


# -- the happy path -----------------------------------------------------------


def test_a_clean_request_parses_without_issues() -> None:
    request = parse()
    assert request.merchant_id == "shop_1"
    assert request.request_id == "order-1001"
    assert request.amount.amount_minor == 1999
    assert request.amount.currency == Currency("USD")
    assert [(m.method, m.token) for m in request.methods] == [(MethodType.CARD, "pm_card_visa")]
    assert request.issues == ()


def test_currency_is_normalized_with_a_non_fatal_issue() -> None:
    request = parse(currency=" usd ")
    assert request.amount.currency.code == "USD"
    [issue] = notes(request, "input/currency")
    assert issue.field == "currency"
    assert not issue.fatal
    assert "USD" in issue.message


def test_request_id_whitespace_is_stripped_with_a_non_fatal_issue() -> None:
    request = parse(request_id="  order-1001 ")
    assert request.request_id == "order-1001"
    [issue] = notes(request, "input/request_id")
    assert not issue.fatal


# -- payment method names -----------------------------------------------------


@pytest.mark.parametrize(
    ("given", "method"),
    [
        ("applepay", MethodType.APPLE_PAY),
        ("APPLE-PAY", MethodType.APPLE_PAY),
        ("Apple Pay", MethodType.APPLE_PAY),
        ("gpay", MethodType.GOOGLE_PAY),
        ("Google Pay", MethodType.GOOGLE_PAY),
        ("googlepay", MethodType.GOOGLE_PAY),
        ("credit card", MethodType.CARD),
        ("CARD", MethodType.CARD),
    ],
)
def test_method_alias_is_normalized_with_a_non_fatal_issue(given: str, method: MethodType) -> None:
    request = parse(method=given)
    assert request.methods[0].method is method
    [issue] = notes(request, "input/method_alias")
    assert issue.field == "method"
    assert not issue.fatal
    assert method.value in issue.message


@pytest.mark.parametrize(
    ("given", "method"),
    [("apple_pay", MethodType.APPLE_PAY), ("google_pay", MethodType.GOOGLE_PAY)],
)
def test_canonical_method_name_is_accepted_without_an_issue(given: str, method: MethodType) -> None:
    request = parse(method=given)
    assert request.methods[0].method is method
    assert request.issues == ()


@pytest.mark.parametrize("given", ["", "   "])
def test_empty_method_defaults_to_card_without_an_issue(given: str) -> None:
    request = parse(method=given)
    assert request.methods[0].method is MethodType.CARD
    assert request.issues == ()


def test_unknown_method_is_fatal() -> None:
    [issue] = rejected(method="paypal")
    assert (issue.field, issue.contract_id, issue.fatal) == ("method", "input/method", True)


# -- amounts ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_decimal", "currency", "minor"),
    [("19.99", "USD", 1999), ("20", "EUR", 2000), ("500", "JPY", 500), ("1.234", "KWD", 1234)],
)
def test_amount_as_a_decimal_string_is_read_in_the_currency_exponent(
    amount_decimal: str, currency: str, minor: int
) -> None:
    request = parse(amount_minor=None, amount_decimal=amount_decimal, currency=currency)
    assert request.amount.amount_minor == minor
    [issue] = notes(request, "input/amount_format")
    assert not issue.fatal


def test_amount_in_minor_units_is_taken_as_is() -> None:
    assert parse(amount_minor=500, currency="JPY").amount.amount_minor == 500


@pytest.mark.parametrize(
    ("amount_minor", "amount_decimal", "minor"),
    [
        (1, None, 1),
        (MAX_AMOUNT_MINOR, None, MAX_AMOUNT_MINOR),
        (None, "0.01", 1),
        (None, "10000000000000.00", MAX_AMOUNT_MINOR),
    ],
)
def test_the_amounts_at_the_bounds_are_accepted(
    amount_minor: int | None, amount_decimal: str | None, minor: int
) -> None:
    request = parse(amount_minor=amount_minor, amount_decimal=amount_decimal, currency="USD")
    assert request.amount.amount_minor == minor


@pytest.mark.parametrize(
    ("amount_decimal", "message"),
    [
        ("10000000000000.01", f"must be at most {MAX_AMOUNT_MINOR} minor units"),
        ("19.99" + "0" * 60, "is not a decimal amount"),
        ("0.00", "must be greater than zero"),
    ],
)
def test_a_decimal_amount_out_of_bounds_is_one_violation(amount_decimal: str, message: str) -> None:
    issues = rejected(amount_minor=None, amount_decimal=amount_decimal)
    assert [(i.field, i.message) for i in issues] == [("amount", message)]


def test_a_decimal_amount_in_an_unknown_currency_is_refused_for_the_currency_alone() -> None:
    issues = rejected(amount_minor=None, amount_decimal="19.99", currency="XYZ")
    assert [i.field for i in issues] == ["currency"]


def test_a_method_alias_is_found_with_its_separators_dropped() -> None:
    assert parse(method="G-Pay").methods[0].method is MethodType.GOOGLE_PAY


# -- fatal issues -------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field", "contract"),
    [
        ({"amount_minor": 0}, "amount", "input/amount"),
        ({"amount_minor": -5}, "amount", "input/amount"),
        ({"amount_minor": 10**16}, "amount", "input/amount"),
        ({"amount_minor": None}, "amount", "input/amount"),
        ({"amount_minor": None, "amount_decimal": "0.00"}, "amount", "input/amount"),
        ({"amount_minor": None, "amount_decimal": "1.234"}, "amount", "input/amount"),
        ({"amount_minor": None, "amount_decimal": "ten"}, "amount", "input/amount"),
        (
            {"amount_minor": None, "amount_decimal": "1.5", "currency": "JPY"},
            "amount",
            "input/amount",
        ),
        ({"currency": "XYZ"}, "currency", "input/currency"),
        ({"currency": "BGN"}, "currency", "input/currency"),  # withdrawn: EUR since 2026
        ({"currency": "HRK"}, "currency", "input/currency"),
        ({"amount_minor": None, "amount_decimal": "+19.99"}, "amount", "input/amount"),
        ({"amount_minor": None, "amount_decimal": "1e3"}, "amount", "input/amount"),
        ({"amount_minor": None, "amount_decimal": "NaN"}, "amount", "input/amount"),
        ({"amount_minor": None, "amount_decimal": "-Infinity"}, "amount", "input/amount"),
        ({"amount_minor": None, "amount_decimal": "1,000.00"}, "amount", "input/amount"),
        ({"amount_minor": None, "amount_decimal": "1 000"}, "amount", "input/amount"),
        ({"amount_minor": None, "amount_decimal": "-0.01"}, "amount", "input/amount"),
        # Past int64, BIGINT and SQLite's INTEGER: refused by the maximum, never stored.
        ({"amount_minor": None, "amount_decimal": "9223372036854775808"}, "amount", "input/amount"),
        ({"amount_minor": None, "amount_decimal": "10000000000000.01"}, "amount", "input/amount"),
        ({"amount_minor": 2**63 - 1}, "amount", "input/amount"),
        ({"currency": ""}, "currency", "input/currency"),
        ({"merchant_id": ""}, "merchant_id", "input/merchant"),
        ({"merchant_id": "my shop!"}, "merchant_id", "input/merchant"),
        ({"request_id": ""}, "request_id", "input/request_id"),
        ({"request_id": "   "}, "request_id", "input/request_id"),
        ({"request_id": "x" * 256}, "request_id", "input/request_id"),
        ({"request_id": "order 1001"}, "request_id", "input/request_id"),
        ({"payment_method": ""}, "payment_method", "input/payment_method"),
        ({"payment_method": "visa"}, "payment_method", "input/payment_method"),
        ({"payment_method": "pm_"}, "payment_method", "input/payment_method"),
        ({"payment_method": PAN}, "payment_method", "input/card_number"),
        ({"metadata": {"note": PAN}}, "metadata", "input/card_number"),
        ({"metadata": {"note": f"card {PAN_SPACED} ok"}}, "metadata", "input/card_number"),
        ({"metadata": {PAN: "x"}}, "metadata", "input/card_number"),
        (
            {"metadata": {f"k{i}": "v" for i in range(MAX_METADATA_KEYS + 1)}},
            "metadata",
            "input/metadata",
        ),
        ({"metadata": {"k" * 41: "v"}}, "metadata", "input/metadata"),
        ({"metadata": {"k": "v" * 501}}, "metadata[k]", "input/metadata"),
        (
            {"methods": [RawMethodInput(method="card", token="pm_card_visa")]},
            "payment_method",
            "input/method",
        ),
        ({"customer_id": "bob"}, "customer_id", "input/customer"),
    ],
)
def test_fatal_issue_rejects_the_request(
    overrides: dict[str, Any], field: str, contract: str
) -> None:
    issues = rejected(**overrides)
    assert (field, contract) in [(i.field, i.contract_id) for i in issues]
    assert all(i.fatal for i in issues)


def test_the_boundary_values_are_accepted() -> None:
    request = parse(
        request_id="x" * 255,
        metadata={f"k{i}": "v" * 500 for i in range(MAX_METADATA_KEYS)},
        customer_id="cus_123",
    )
    assert len(request.metadata) == MAX_METADATA_KEYS
    assert request.customer_id == "cus_123"


@pytest.mark.parametrize(
    "overrides",
    [
        {"payment_method": PAN},
        {"payment_method": PAN_SPACED},
        {"metadata": {"note": f"my card is {PAN}"}},
        {"metadata": {"note": f"my card is {PAN_SPACED}"}},
        {"metadata": {PAN: "key is a card"}},
        {"currency": PAN},
        {"method": PAN_SPACED},
        {"request_id": PAN},
        {"customer_id": f"cus_{PAN}"},
        {"amount_minor": None, "amount_decimal": PAN},
        {"methods": [RawMethodInput(method="card", token=PAN)]},
        # Longer than any token only by the blanks around it: scanned as trimmed.
        {"payment_method": PAN + " " * 300},
        # Two fields under one name: named once.
        {"metadata": {"a": PAN, "b": PAN_SPACED}},
    ],
)
def test_rejection_for_a_card_number_never_repeats_its_digits(overrides: dict[str, Any]) -> None:
    with pytest.raises(RequestRejected) as info:
        parse_payment_request(raw(**overrides))
    issues = info.value.issues
    assert [i.contract_id for i in issues] == ["input/card_number"]
    texts = [str(info.value), *(i.field for i in issues), *(i.message for i in issues)]
    digits_only = re.sub(r"\D", "", " ".join(texts))
    for pan in (PAN, PAN_SPACED.replace(" ", "")):
        assert pan not in digits_only
        assert pan[:4] not in " ".join(texts)


SLOW = "1 " * 100_000  # 200 KB of one-digit groups: the card scan's hardest text


@pytest.mark.parametrize(
    ("overrides", "field", "contract"),
    [
        ({"merchant_id": SLOW}, "merchant_id", "input/merchant"),
        ({"request_id": SLOW}, "request_id", "input/request_id"),
        ({"currency": SLOW}, "currency", "input/currency"),
        ({"amount_minor": None, "amount_decimal": SLOW}, "amount", "input/amount"),
        ({"payment_method": SLOW}, "payment_method", "input/payment_method"),
        ({"method": SLOW}, "method", "input/method"),
        ({"customer_id": SLOW}, "customer_id", "input/customer"),
        ({"metadata": {"note": SLOW}}, "metadata[note]", "input/metadata"),
        ({"metadata": {SLOW: "x"}}, "metadata", "input/metadata"),
        (
            {"methods": [RawMethodInput(method=SLOW, token="pm_card_visa")]},
            "methods[0].method",
            "input/method",
        ),
        ({"methods": [RawMethodInput(token=SLOW)]}, "methods[0].token", "input/payment_method"),
    ],
)
def test_a_field_longer_than_any_valid_value_is_refused_for_its_length_unscanned(
    overrides: dict[str, Any], field: str, contract: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import payorch.domain.request as request_module

    scanned: list[int] = []

    def scan(text: str) -> bool:
        scanned.append(len(text))
        return contains_card_number(text)

    monkeypatch.setattr(request_module, "contains_card_number", scan)
    issues = rejected(**overrides)
    assert (field, contract) in [(i.field, i.contract_id) for i in issues]
    assert max(scanned) < 1000


@pytest.mark.parametrize(
    "overrides",
    [
        {"currency": PAN + "x" * 20},
        {"method": PAN + "x" * 40},
        {"amount_minor": None, "amount_decimal": PAN + "9" * 40},
    ],
)
def test_an_over_long_field_is_never_quoted_back(overrides: dict[str, Any]) -> None:
    issues = rejected(**overrides)
    assert PAN not in " ".join(f"{i.field} {i.message}" for i in issues)


def _not_luhn(body: str) -> str:
    return body + next(d for d in "0123456789" if not luhn_valid(body + d))


@pytest.mark.parametrize(
    "overrides",
    [
        {"currency": _not_luhn(PAN)},  # quoted back up to 16 characters
        {"method": "x" * 16 + _not_luhn(PAN)},  # up to 32
        {"amount_minor": None, "amount_decimal": "x" * 16 + _not_luhn(PAN)},
    ],
)
def test_a_value_quoted_back_is_never_cut_into_a_card_number(overrides: dict[str, Any]) -> None:
    issues = rejected(**overrides)
    assert [i.contract_id for i in issues] != ["input/card_number"]
    assert not contains_card_number(" ".join(i.message for i in issues))


@pytest.mark.parametrize(
    ("key", "contract"),
    [
        ("refund-1", None),
        ("x" * 255, None),
        ("", "input/request_id"),
        ("x" * 256, "input/request_id"),
        ("refund 1", "input/request_id"),
        (" refund-1", "input/request_id"),  # not trimmed: a retry must find the same key
        ("é", "input/request_id"),
        ("4000056655665556", "input/card_number"),
        ("refund-4242-4242-4242-4242", "input/card_number"),
        ("1 " * 100_000, "input/request_id"),  # refused for its length, unscanned
    ],
)
def test_an_idempotency_key_is_held_to_the_request_id_rules(key: str, contract: str | None) -> None:
    issues = idempotency_key_issues(key)
    assert [i.contract_id for i in issues] == ([contract] if contract else [])
    assert all(i.fatal and i.field == "request_id" for i in issues)
    assert not contains_card_number(" ".join(i.message for i in issues))


@pytest.mark.parametrize(
    ("merchant_id", "contract"),
    [
        ("m_1", None),
        ("shop.eu-1", None),
        ("m" * 64, None),
        ("", "input/merchant"),
        ("m" * 65, "input/merchant"),
        ("m 1", "input/merchant"),
        ("4000056655665556", "input/card_number"),
        ("1 " * 100_000, "input/merchant"),  # refused for its length, unscanned
    ],
)
def test_a_merchant_id_an_operator_names_is_held_to_the_payment_rules(
    merchant_id: str, contract: str | None
) -> None:
    issues = merchant_id_issues(merchant_id)
    assert [i.contract_id for i in issues] == ([contract] if contract else [])
    if contract is not None:
        assert rejected(merchant_id=merchant_id)  # as CreatePayment refuses it


def test_all_fatal_issues_are_reported_together() -> None:
    issues = rejected(
        merchant_id="",
        request_id="",
        amount_minor=0,
        currency="XYZ",
        payment_method="visa",
        customer_id="bob",
        metadata={f"k{i}": "v" for i in range(MAX_METADATA_KEYS + 1)},
    )
    assert {i.field for i in issues} == {
        "merchant_id",
        "request_id",
        "amount",
        "currency",
        "payment_method",
        "customer_id",
        "metadata",
    }
    assert all(i.fatal for i in issues)


@pytest.mark.parametrize(
    "key",
    ["payorch_payment_id", "payorch_step", "payorch_order", "PAYORCH_x", "a[b]", "rows]", "["],
)
def test_a_metadata_key_stripe_would_refuse_or_of_payorchs_own_is_refused(key: str) -> None:
    """Forwarded to the processor beside payorch's own `payorch_*` keys (which win), a
    caller's metadata must be all of it taken: Stripe refuses a key with `[` or `]`."""
    issues = rejected(metadata={key: "v", "order": "1001"})
    assert [(i.field, i.contract_id) for i in issues] == [("metadata", "input/metadata")]
    assert "payorch_" in issues[0].message and "[" in issues[0].message


def test_metadata_keys_leave_room_for_payorchs_own_under_stripes_fifty() -> None:
    assert MAX_METADATA_KEYS == 50 - 3  # payorch_payment_id, payorch_step, payorch_merchant_id
    issues = rejected(metadata={f"k{i}": "v" for i in range(48)})
    assert [i.field for i in issues] == ["metadata"]
    assert "at most 47 keys" in issues[0].message


def test_every_bad_metadata_entry_is_reported_not_only_the_first() -> None:
    issues = rejected(metadata={"a": "v" * 501, "ok": "fine", "b": "v" * 501, "k" * 41: "v"})

    assert sorted(i.field for i in issues) == ["metadata", "metadata[a]", "metadata[b]"]


def test_rejection_carries_only_fatal_issues_not_the_notes() -> None:
    issues = rejected(currency=" usd ", method="gpay", merchant_id="")
    assert [i.field for i in issues] == ["merchant_id"]


def test_every_fatal_issue_appears_in_the_exception_message() -> None:
    with pytest.raises(RequestRejected) as info:
        parse_payment_request(raw(merchant_id="", currency="XYZ"))
    assert "merchant_id" in str(info.value)
    assert "currency" in str(info.value)


# -- several methods ----------------------------------------------------------


def test_several_methods_are_parsed_with_their_amounts() -> None:
    request = parse(
        payment_method="",
        methods=[
            RawMethodInput(method="card", token=" pm_card_visa ", amount_minor=1000),
            RawMethodInput(method="Apple Pay", token="tok_apple", amount_decimal="9.99"),
        ],
    )
    assert [(m.method, m.token, m.amount_minor) for m in request.methods] == [
        (MethodType.CARD, "pm_card_visa", 1000),
        (MethodType.APPLE_PAY, "tok_apple", 999),
    ]
    assert [i.field for i in notes(request, "input/method_alias")] == ["methods[1].method"]


def test_too_many_methods_is_fatal() -> None:
    methods = [RawMethodInput(token="pm_card_visa") for _ in range(MAX_METHODS + 1)]
    issues = rejected(payment_method="", methods=methods)
    assert ("methods", "input/method") in [(i.field, i.contract_id) for i in issues]


def test_as_many_methods_as_allowed_are_parsed() -> None:
    methods = [RawMethodInput(token="pm_card_visa") for _ in range(MAX_METHODS)]
    assert len(parse(payment_method="", methods=methods).methods) == MAX_METHODS


def test_too_many_methods_or_metadata_keys_is_one_violation_not_one_per_entry() -> None:
    # Refused for their number: the entries themselves are not judged one by one.
    methods = [RawMethodInput(token="card data?") for _ in range(MAX_METHODS + 1)]
    assert [i.field for i in rejected(payment_method="", methods=methods)] == ["methods"]
    metadata = {f"[k{i}]": "v" for i in range(MAX_METADATA_KEYS + 1)}
    assert [i.field for i in rejected(metadata=metadata)] == ["metadata"]


def test_a_bad_token_in_the_second_method_names_that_method() -> None:
    issues = rejected(
        payment_method="",
        methods=[RawMethodInput(token="pm_card_visa"), RawMethodInput(token="visa")],
    )
    assert [i.field for i in issues] == ["methods[1].token"]


# -- fingerprint --------------------------------------------------------------


def test_fingerprint_is_equal_for_equal_requests() -> None:
    assert parse().fingerprint() == parse().fingerprint()


def test_fingerprint_ignores_the_request_id() -> None:
    assert parse(request_id="a").fingerprint() == parse(request_id="b").fingerprint()


@pytest.mark.parametrize(
    "overrides",
    [
        {"amount_minor": 2000},
        {"currency": "EUR"},
        {"payment_method": "pm_card_mastercard"},
        {"method": "apple_pay"},
        {"metadata": {"order": "1"}},
        {"customer_id": "cus_1"},
        {"off_session": True},
    ],
)
def test_fingerprint_differs_when_the_payment_differs(overrides: dict[str, Any]) -> None:
    assert parse(**overrides).fingerprint() != parse().fingerprint()


def test_fingerprint_is_the_same_for_inputs_that_normalize_to_the_same_request() -> None:
    loose = parse(currency=" usd ", amount_minor=None, amount_decimal="19.99", method="Card")
    assert loose.fingerprint() == parse().fingerprint()


def test_fingerprint_does_not_depend_on_saving_the_method_for_later() -> None:
    """How the processor keeps the card is not what is charged: a plan's first charge
    stored before it asked to save the card is replayed by the plan's retry."""
    saved = parse(customer_id="cus_1", save_for_off_session=True)
    assert saved.save_for_off_session
    assert saved.fingerprint() == parse(customer_id="cus_1").fingerprint()


def test_fingerprint_does_not_depend_on_metadata_order() -> None:
    a = parse(metadata={"a": "1", "b": "2"})
    b = parse(metadata={"b": "2", "a": "1"})
    assert a.fingerprint() == b.fingerprint()


# -- split methods and ids held to the same rules as the rest ----------------------


def _split(**method: Any) -> list[RawMethodInput]:
    return [
        RawMethodInput("apple_pay", "pm_card_visa", 6000),
        RawMethodInput("card", "pm_card_visa", None, **method),
    ]


@pytest.mark.parametrize("customer", ["cus_" + "a" * 297, "customer 1", "cus_1-2", "4242 x"])
def test_a_methods_customer_id_is_held_to_the_format_and_length_of_the_top_level_one(
    customer: str,
) -> None:
    issues = rejected(payment_method="", methods=_split(customer_id=customer))
    assert [i.field for i in issues] == ["methods[1].customer_id"]


def test_a_methods_customer_id_in_the_processors_format_is_kept() -> None:
    request = parse(payment_method="", methods=_split(customer_id=" cus_42 "))
    assert request.methods[1].customer_id == "cus_42"


def test_method_and_methods_together_are_refused_like_payment_method_and_methods() -> None:
    issues = rejected(payment_method="", method="apple_pay", methods=_split())
    assert [(i.field, i.message) for i in issues] == [
        ("method", "give either method or methods, not both")
    ]


def test_a_refund_request_id_taken_as_given_may_not_end_in_a_line_break() -> None:
    assert idempotency_key_issues("refund-1\n")
    assert not idempotency_key_issues("refund-1")


@pytest.mark.parametrize("line_break", ["\n", "\r\n"])
def test_an_installment_plan_request_id_ending_in_a_line_break_is_invalid(line_break: str) -> None:
    assert plan_request_id_problems("plan-1") == []
    assert [f for f, _ in plan_request_id_problems("plan-1" + line_break)] == ["request_id"]
