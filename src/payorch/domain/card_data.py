"""Card numbers must never enter the system: find anything that looks like one."""

from __future__ import annotations

import re

# A run of digits, optionally separated by single spaces or dashes.
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d)*")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    """True when `text` holds a Luhn-valid run of 13-19 digits (spaces/dashes allowed)."""
    for match in _DIGIT_RUN.finditer(text):
        digits = match.group(0).replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return True
    return False


def redact_card_numbers(text: str) -> str:
    """Replace every card-number-like run by a fixed marker (for logs and messages)."""

    def _sub(match: re.Match[str]) -> str:
        digits = match.group(0).replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return "[card number removed]"
        return match.group(0)

    return _DIGIT_RUN.sub(_sub, text)
