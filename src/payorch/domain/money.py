"""Money in integer minor units and the ISO-4217 currencies we know."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from payorch.domain.card_data import clip

# ISO-4217 active codes (list one) with their minor-unit exponent; no other code is a
# currency a payment, a plan or a config may name. Exponents as ISO gives them, not as a
# processor counts them: MGA and MRU two (their subunits are fifths, which ISO's list does
# not count in), ISK and UGX none (Stripe keeps two decimals for both, MGA none: its
# adapter scales them).
_ZERO_DECIMAL = {
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
    "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF",
}  # fmt: skip
_THREE_DECIMAL = {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"}
_FOUR_DECIMAL = {"CLF", "UYW"}
_TWO_DECIMAL = {
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD",
    "BDT", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CNY", "COP", "COU", "CRC", "CUP", "CVE", "CZK",
    "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS",
    "GIP", "GMD", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IRR",
    "JMD", "KES", "KGS", "KHR", "KPW", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL",
    "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN",
    "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB", "SAR", "SBD", "SCR", "SDG", "SEK",
    "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS",
    "TMT", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "USD", "USN", "UYU", "UZS", "VED",
    "VES", "WST", "XCD", "XCG", "YER", "ZAR", "ZMW", "ZWG",
}  # fmt: skip

EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_TWO_DECIMAL, 2),
    **dict.fromkeys(_ZERO_DECIMAL, 0),
    **dict.fromkeys(_THREE_DECIMAL, 3),
    **dict.fromkeys(_FOUR_DECIMAL, 4),
}

# Codes ISO-4217 has withdrawn since payorch took them, with what replaced them: refused
# for anything new (a payment, a plan, a config's currencies), still known so that what
# was stored in them reads and prints as it was. ANG gave way to XCG on 2025-03-31, BGN
# to EUR on 2026-01-01.
WITHDRAWN: dict[str, tuple[int, str]] = {"ANG": (2, "XCG"), "BGN": (2, "EUR")}

# Codes ISO-4217 lists that no payment is made in: precious metals, units of account and
# bond-market units without a minor unit, and the codes for testing and "no currency".
NO_PAYMENT_CODES = frozenset(
    {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"}
)

# The smallest amount a card charge can take in these currencies, in minor units, where
# it is more than one: acquirers take the three-decimal currencies in tens of the minor
# unit only (the last digit 0), and Stripe counts MGA in whole ariary (ISO gives it two
# decimals). Stripe refuses any other amount. Amounts the service makes up itself (an
# installment split) are made in these steps.
CHARGE_STEPS: dict[str, int] = {
    **dict.fromkeys(("BHD", "JOD", "KWD", "OMR", "TND"), 10),
    "MGA": 100,
}

# Largest amount we accept: fits int64 with room, and far above any real payment.
MAX_AMOUNT_MINOR = 10**15


class UnknownCurrency(ValueError):
    """The code is not an active ISO-4217 currency."""


class InvalidAmount(ValueError):
    """The amount cannot be expressed in the currency's minor units."""


@dataclass(frozen=True, slots=True)
class Currency:
    code: str

    @classmethod
    def parse(cls, raw: str) -> Currency:
        code = raw.strip().upper()
        if code in WITHDRAWN:
            raise UnknownCurrency(
                f"{code!r} was withdrawn from ISO-4217 (replaced by {WITHDRAWN[code][1]})"
            )
        if code in NO_PAYMENT_CODES:
            raise UnknownCurrency(
                f"{code!r} is an ISO-4217 code no payment is made in"
                " (a precious metal, a unit of account or a testing code)"
            )
        if code not in EXPONENTS:
            raise UnknownCurrency(f"{clip(raw.strip(), 16)!r} is not an ISO-4217 currency code")
        return cls(code)

    @property
    def exponent(self) -> int:
        """ISO-4217's minor-unit exponent (a withdrawn code's as it last had it)."""
        found = EXPONENTS.get(self.code)
        return WITHDRAWN[self.code][0] if found is None else found

    @property
    def charge_step(self) -> int:
        """The smallest amount, in minor units, a card charge takes (CHARGE_STEPS)."""
        return CHARGE_STEPS.get(self.code, 1)


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: Currency

    def __post_init__(self) -> None:
        if not 0 <= self.amount_minor <= MAX_AMOUNT_MINOR:
            raise InvalidAmount(f"amount {self.amount_minor} is out of range")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot mix {self.currency.code} and {other.currency.code}")


# ASCII digits only: `\d` takes every script's digits, and some read as others (the
# Bengali four looks like an 8): an amount is charged as it reads.
_DECIMAL_RE = re.compile(r"^\s*([0-9]{1,16})(?:\.([0-9]{1,4}))?\s*$")


def parse_decimal_amount(raw: str, currency: Currency) -> int:
    """Parse "19.99" into 1999 minor units of a two-decimal currency.

    Digits beyond the currency's exponent are an error unless they are zeros
    ("19.990" is 1999): an amount is never rounded.
    """
    match = _DECIMAL_RE.match(raw)
    if match is None:
        raise InvalidAmount(f"{clip(raw.strip(), 32)!r} is not a decimal amount")
    try:
        value = Decimal(match.group(0).strip())
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only digits
        raise InvalidAmount(f"{clip(raw.strip(), 32)!r} is not a decimal amount") from exc
    scaled = value.scaleb(currency.exponent)
    if scaled != scaled.to_integral_value():
        raise InvalidAmount(
            f"{raw.strip()[:32]!r} has more than {currency.exponent} decimals for {currency.code}"
        )
    return int(scaled)


def format_minor(amount_minor: int, currency: Currency) -> str:
    """1999 USD -> "19.99"."""
    exp = currency.exponent
    if exp == 0:
        return str(amount_minor)
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(amount_minor), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}"
