"""Money: ISO-4217 currencies, minor units, and exact decimal parsing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payorch.domain.money import (
    EXPONENTS,
    MAX_AMOUNT_MINOR,
    Currency,
    InvalidAmount,
    Money,
    UnknownCurrency,
    format_minor,
    parse_decimal_amount,
)

USD = Currency.parse("USD")
JPY = Currency.parse("JPY")
KWD = Currency.parse("KWD")
EUR = Currency.parse("EUR")


# -- currencies ---------------------------------------------------------------


@pytest.mark.parametrize("raw", ["usd", "Usd", " USD ", "\tusd\n", "USD"])
def test_currency_code_is_upper_cased_and_stripped(raw: str) -> None:
    assert Currency.parse(raw).code == "USD"


@pytest.mark.parametrize("raw", ["XYZ", "US", "USDX", "", "   ", "EURO", "U S D", "dollar"])
def test_unknown_currency_code_is_refused(raw: str) -> None:
    with pytest.raises(UnknownCurrency):
        Currency.parse(raw)


def test_unknown_currency_error_does_not_echo_an_overlong_input() -> None:
    raw = "X" * 200
    with pytest.raises(UnknownCurrency) as info:
        Currency.parse(raw)
    assert raw not in str(info.value)


@pytest.mark.parametrize(
    ("code", "exponent"),
    [
        ("USD", 2), ("EUR", 2), ("HUF", 2), ("TWD", 2), ("MGA", 2), ("MRU", 2), ("XCG", 2),
        ("ZWG", 2), ("SLE", 2), ("VED", 2), ("JPY", 0), ("KRW", 0), ("ISK", 0), ("UGX", 0),
        ("VND", 0), ("CLP", 0), ("KWD", 3), ("BHD", 3), ("IQD", 3), ("LYD", 3), ("CLF", 4),
        ("UYW", 4),
    ],
)  # fmt: skip
def test_currency_exponent_matches_iso_4217(code: str, exponent: int) -> None:
    assert Currency.parse(code).exponent == exponent


@pytest.mark.parametrize(("code", "replaced_by"), [("BGN", "EUR"), ("bgn", "EUR"), ("ANG", "XCG")])
def test_a_code_iso_4217_has_withdrawn_is_refused_naming_what_replaced_it(
    code: str, replaced_by: str
) -> None:
    with pytest.raises(UnknownCurrency, match=f"withdrawn.*{replaced_by}"):
        Currency.parse(code)
    assert code.upper() not in EXPONENTS


@pytest.mark.parametrize(
    "code", ["HRK", "ZWL", "SLL", "CUC", "MRO", "STD", "VEF", "LTL", "XDR", "XAU", "XTS", "XXX"]
)
def test_historic_codes_and_units_no_payment_is_made_in_are_refused(code: str) -> None:
    with pytest.raises(UnknownCurrency):
        Currency.parse(code)


@pytest.mark.parametrize("code", ["XAU", "xag", "XDR", "XTS", "XXX"])
def test_a_code_iso_4217_lists_for_no_payment_is_refused_as_such_not_as_unknown(
    code: str,
) -> None:
    """XAU is gold's ISO-4217 code: "not an ISO-4217 currency code" told a payments
    engineer something they knew to be false."""
    with pytest.raises(UnknownCurrency, match="is an ISO-4217 code no payment is made in"):
        Currency.parse(code)


def test_what_was_stored_in_a_withdrawn_currency_still_reads_in_its_exponent() -> None:
    assert Currency("BGN").exponent == 2
    assert format_minor(1999, Currency("BGN")) == "19.99"


def test_unknown_currency_error_is_a_value_error_for_callers_that_catch_broadly() -> None:
    with pytest.raises(ValueError):
        Currency.parse("ZZZ")


# -- decimal parsing ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "currency", "minor"),
    [
        ("19.99", USD, 1999),
        ("19.9", USD, 1990),
        ("19", USD, 1900),
        ("0.05", USD, 5),
        (" 7.00 ", USD, 700),
        ("500", JPY, 500),
        ("1.234", KWD, 1234),
        ("0.001", KWD, 1),
        ("1", KWD, 1000),
    ],
)
def test_decimal_amount_is_parsed_into_exact_minor_units(
    raw: str, currency: Currency, minor: int
) -> None:
    assert parse_decimal_amount(raw, currency) == minor


@pytest.mark.parametrize(
    ("raw", "currency"),
    [
        ("1.5", JPY),
        ("0.1", JPY),
        ("1.234", USD),
        ("19.999", USD),
        ("1.2345", KWD),
    ],
)
def test_decimal_amount_with_more_decimals_than_the_currency_is_refused_not_rounded(
    raw: str, currency: Currency
) -> None:
    with pytest.raises(InvalidAmount):
        parse_decimal_amount(raw, currency)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        "abc",
        "19,99",
        "1,000.00",
        "-5",
        "+5",
        "1e3",
        "19.99 USD",
        "$19.99",
        ".5",
        "5.",
        "1.2.3",
        "NaN",
        "Infinity",
        "0x10",
        "12345678901234567",  # 17 integer digits
    ],
)
def test_garbage_decimal_amount_is_refused(raw: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_decimal_amount(raw, USD)


def test_invalid_amount_error_does_not_echo_an_overlong_input() -> None:
    raw = "9" * 40 + "x"
    with pytest.raises(InvalidAmount) as info:
        parse_decimal_amount(raw, USD)
    assert raw not in str(info.value)


@pytest.mark.parametrize(
    "raw",
    [
        "1\u09ea.00",  # Bengali four: reads as 18.00, would be charged as 14.00
        "\uff11\uff12.\uff13\uff14",  # fullwidth 12.34
        "\u0661\u0662\u0663.\u0664\u0665",  # Arabic-Indic 123.45
        "12.\u0665\u0660",
    ],
    ids=["bengali-four", "fullwidth", "arabic-indic", "arabic-indic-decimals"],
)
def test_an_amount_in_digits_other_than_ascii_is_refused_never_read(raw: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_decimal_amount(raw, USD)


# -- formatting ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1999, USD, "19.99"),
        (5, USD, "0.05"),
        (0, USD, "0.00"),
        (100, EUR, "1.00"),
        (-150, USD, "-1.50"),
        (500, JPY, "500"),
        (1234, KWD, "1.234"),
        (7, KWD, "0.007"),
    ],
)
def test_format_minor_prints_the_currency_exponent_digits(
    minor: int, currency: Currency, text: str
) -> None:
    assert format_minor(minor, currency) == text


@settings(max_examples=200, deadline=None)
@given(code=st.sampled_from(sorted(EXPONENTS)), amount=st.integers(0, 10**12))
def test_format_then_parse_round_trips_for_every_known_currency(code: str, amount: int) -> None:
    currency = Currency.parse(code)
    assert parse_decimal_amount(format_minor(amount, currency), currency) == amount


# -- Money --------------------------------------------------------------------


@pytest.mark.parametrize("amount", [0, 1, MAX_AMOUNT_MINOR])
def test_money_accepts_amounts_from_zero_to_the_maximum(amount: int) -> None:
    assert Money(amount, USD).amount_minor == amount


@pytest.mark.parametrize("amount", [-1, MAX_AMOUNT_MINOR + 1])
def test_money_refuses_amounts_out_of_range(amount: int) -> None:
    with pytest.raises(InvalidAmount):
        Money(amount, USD)


def test_money_of_the_same_currency_adds_and_subtracts() -> None:
    assert Money(1000, USD) + Money(999, USD) == Money(1999, USD)
    assert Money(1999, USD) - Money(999, USD) == Money(1000, USD)


def test_subtracting_below_zero_is_refused() -> None:
    with pytest.raises(InvalidAmount):
        Money(100, USD) - Money(101, USD)


def test_adding_beyond_the_maximum_is_refused() -> None:
    with pytest.raises(InvalidAmount):
        Money(MAX_AMOUNT_MINOR, USD) + Money(1, USD)


@pytest.mark.parametrize("op", ["add", "sub"])
def test_mixing_currencies_is_refused(op: str) -> None:
    a, b = Money(500, USD), Money(500, EUR)
    with pytest.raises(ValueError, match="USD and EUR"):
        if op == "add":
            a + b
        else:
            a - b


def test_money_is_equal_only_with_the_same_currency() -> None:
    assert Money(500, USD) == Money(500, Currency.parse("usd"))
    assert Money(500, USD) != Money(500, EUR)
