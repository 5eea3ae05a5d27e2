"""Card numbers must never enter the system: find anything that looks like one."""

from __future__ import annotations

import re
import unicodedata

# A run of digit groups separated by single spaces or dashes.
_DIGIT_RUN = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_GROUP_SPLIT = re.compile(r"[ -]")
_DIGITS = re.compile(r"[0-9]+")
# A digit and 12 more digits, spaces or dashes: every card-number span holds such a
# stretch, so text without one holds no card number. Most text (ids, tokens, amounts,
# log lines) fails this one search and skips the span scan. (A character class, not
# `\d(?:[ -]?\d){12}`: the group backtracks at every digit of a hex id, 5x slower.)
_CARD_STRETCH = re.compile(r"[0-9][0-9 -]{12}")


def _ascii_digits(text: str) -> str:
    """Other scripts' digits (fullwidth, Arabic-Indic, ...) as ASCII, so none hide a number."""
    if text.isascii():
        return text
    return "".join(
        str(unicodedata.decimal(ch)) if not ch.isascii() and ch.isdecimal() else ch for ch in text
    )


# Cards are written in groups of 4 (Amex 4-6-5): a separated group longer than this is
# not part of a card number (UUIDs, with their 8- and 12-digit groups, are not cards).
MAX_CARD_GROUP = 6


def _glued(text: str, start: int, end: int) -> bool:
    """A digit group stuck to letters is part of a token (a hex id), not a card group."""
    return (start > 0 and text[start - 1].isalpha()) or (end < len(text) and text[end].isalpha())


def _card_spans(text: str) -> list[tuple[int, int]]:
    """Spans of `text` holding a Luhn-valid 13-19 digit number: one unseparated run, or
    consecutive short groups of a run (a card followed by a CVC or an expiry, say).
    Every one of them, also when one run holds several cards."""
    spans = []
    for match in _DIGIT_RUN.finditer(text):
        run = match.group(0)
        groups = [(m.start(), m.end()) for m in _DIGITS.finditer(run)]
        i = 0
        while i < len(groups):
            first = groups[i][1] - groups[i][0]
            start, end = match.start() + groups[i][0], match.start() + groups[i][1]
            inside_token = (
                start > 0 and text[start - 1].isalpha() and end < len(text) and text[end].isalpha()
            )
            if (
                13 <= first <= 19
                and not inside_token
                and luhn_valid(run[groups[i][0] : groups[i][1]])
            ):
                spans.append((match.start() + groups[i][0], match.start() + groups[i][1]))
                i += 1
                continue
            digits, hit = "", None
            for j in range(i, len(groups)):
                start, end = match.start() + groups[j][0], match.start() + groups[j][1]
                if end - start > MAX_CARD_GROUP or _glued(text, start, end):
                    break
                digits += run[groups[j][0] : groups[j][1]]
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and luhn_valid(digits):
                    hit = (match.start() + groups[i][0], match.start() + groups[j][1])
                    break
            if hit:
                # The run goes on after this card: another may follow it.
                spans.append(hit)
                i = j + 1
            else:
                i += 1
    return spans


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
    text = _ascii_digits(text)
    if _CARD_STRETCH.search(text) is None:
        return False
    return bool(_card_spans(text))


def redact_card_numbers(text: str) -> str:
    """Replace every card-number-like run by a fixed marker (for logs and messages)."""
    text = _ascii_digits(text)
    if _CARD_STRETCH.search(text) is None:
        return text
    for start, end in reversed(_card_spans(text)):
        text = text[:start] + "[card number removed]" + text[end:]
    return text
