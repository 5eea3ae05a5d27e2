"""Card numbers must never enter the system: find anything that looks like one.

The scan takes time linear in the text: a caller controls the text, and a scan
that slowed down on some shape of it (long runs of short digit groups, say) would
let one request hold the event loop.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import accumulate

# A digit and 12 more digits, spaces or dashes: every card-number span holds such a
# stretch, so text without one holds no card number. Most text (ids, tokens, amounts,
# log lines) fails this one search and skips the span scan. (A character class, not
# `\d(?:[ -]?\d){12}`: the group backtracks at every digit of a hex id, 5x slower.)
_CARD_STRETCH = re.compile(r"[0-9][0-9 -]{12}")
# A run of digit groups separated by single spaces or dashes, holding 13 digits or
# more (fewer cannot make a card). The lookahead, tried where a run starts, reads at
# most 25 characters.
_RUN = re.compile(r"(?<![0-9])(?=[0-9](?:[ -]?[0-9]){12})[0-9]+(?:[ -][0-9]+)*")
_SEPARATOR = re.compile(r"[ -]")
_LONG_GROUP = re.compile(r"(?<![0-9])[0-9]{13,19}(?![0-9])")
_NO_SEPARATORS = str.maketrans("", "", " -")
# Hex digits to the end of a word (letters and digits): matched from a position, it
# tells whether the word from there on holds only hex digits.
_HEX_WORD = re.compile(r"[0-9A-Fa-f]*+(?![^\W_])")
# A digit's part of the Luhn sum, as is and doubled (a byte per digit).
_VALUE = bytes.maketrans(b"0123456789", bytes(range(10)))
_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))
_MOD_10 = (10).__rmod__

REDACTED = "[card number removed]"
MIN_CARD_DIGITS = 13
MAX_CARD_DIGITS = 19
# Cards are written in groups of 4 (Amex 4-6-5): a separated group longer than this is
# not part of a card number (UUIDs, with their 8- and 12-digit groups, are not cards).
MAX_CARD_GROUP = 6


def _ascii_digits(text: str) -> str:
    """Other scripts' digits (fullwidth, Arabic-Indic, ...) as ASCII, so none hide a number."""
    if text.isascii():
        return text
    return "".join(
        str(unicodedata.decimal(ch)) if not ch.isascii() and ch.isdecimal() else ch for ch in text
    )


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


def _luhn_prefixes(digits: str) -> tuple[bytes, bytes]:
    """Running Luhn sums mod 10 of `digits`, position k holding the sum of digits[:k]:
    the first doubling the digits at even positions, the second those at odd ones.

    digits[a:b] passes Luhn when its sum, doubling every second digit from its last,
    is 0 mod 10. Its last digit is at b - 1, so the doubled ones sit at positions of
    b's parity: the sum is table[b] - table[a] with table = (even, odd)[b % 2], and
    digits[a:b] passes exactly when table[a] == table[b]. Built in C, not per digit.
    """
    raw = digits.encode("ascii")
    value, doubled = raw.translate(_VALUE), raw.translate(_DOUBLED)
    even, odd = bytearray(value), bytearray(value)
    even[0::2], odd[1::2] = doubled[0::2], doubled[1::2]
    return (
        bytes(map(_MOD_10, accumulate(even, initial=0))),
        bytes(map(_MOD_10, accumulate(odd, initial=0))),
    )


class _Text:
    """The text scanned, and the same reversed, to read the word before a position."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._reversed = ""

    def in_hex_word(self, start: int, end: int) -> tuple[bool, bool]:
        """Whether text[start:end] is stuck to letters on its left, and on its right,
        and the word they make with it holds only hex digits (0-9, a-f, A-F)."""
        text = self.text
        left = start > 0 and text[start - 1].isalpha()
        if left:
            self._reversed = self._reversed or text[::-1]
            left = _HEX_WORD.match(self._reversed, len(text) - start) is not None
        right = end < len(text) and text[end].isalpha()
        if right:
            right = _HEX_WORD.match(text, end) is not None
        return left, right


def _run_spans(scanned: _Text, start: int, run: str, spans: list[tuple[int, int]]) -> None:
    """Append the card spans of `run`, found at text[start:]: every group of 13-19
    digits that passes Luhn, and every shortest stretch of groups of at most
    MAX_CARD_GROUP digits that holds 13-19 digits and passes Luhn.

    Letters next to a number hide nothing (`Visa4242-4242-4242-4242`,
    `4242 4242 4242 4242exp`, `pm_x4000056655665556x`), except the other digits of a
    hex word (a hex id, a UUID's groups): a number with hex letters on both sides, and
    a group that hex letters stick to at either end of the run, are part of that word.
    """
    groups = _SEPARATOR.split(run)
    n = len(groups)
    glued_left, glued_right = scanned.in_hex_word(start, start + len(run))
    # Digit offsets: group k holds digits bounds[k]:bounds[k + 1], and starts at
    # text[start + bounds[k] + k] (one separator before each group but the first).
    lengths = list(map(len, groups))
    bounds = list(accumulate(lengths, initial=0))
    if (glued_left and glued_right) and n == 1:
        return  # one number inside a hex word (a hex id), not a card
    for long in _LONG_GROUP.finditer(run):
        if luhn_valid(long.group(0)):
            spans.append((start + long.start(), start + long.end()))
    # A group stuck to a hex word is part of it (a UUID's), not a card group.
    first = 1 if glued_left else 0
    last = n - 1 if glued_right else n
    if bounds[last] - bounds[first] < MIN_CARD_DIGITS:
        return
    even, odd = _luhn_prefixes(run.translate(_NO_SEPARATORS))
    # Stretches groups[i:j], for j from left to right. latest_even[r] is the largest i
    # with even[bounds[i]] == r among the starts far enough behind j to hold 13
    # digits (they are added as j moves on): the stretch from there is the shortest
    # that ends at j and passes Luhn, and it is a card when it holds 19 digits or less.
    latest_even, latest_odd = [-1] * 10, [-1] * 10
    i = first  # the next start to add
    for j in range(first + 1, last + 1):
        if lengths[j - 1] > MAX_CARD_GROUP:
            latest_even, latest_odd, i = [-1] * 10, [-1] * 10, j
            continue
        b = bounds[j]
        while i < j and bounds[i] <= b - MIN_CARD_DIGITS:
            latest_even[even[bounds[i]]] = i
            latest_odd[odd[bounds[i]]] = i
            i += 1
        a = latest_odd[odd[b]] if b & 1 else latest_even[even[b]]
        if a >= 0 and bounds[a] >= b - MAX_CARD_DIGITS:
            spans.append((start + bounds[a] + a, start + b + j - 1))
            # The run goes on after this card: another may follow it.
            latest_even, latest_odd, i = [-1] * 10, [-1] * 10, j


def _card_spans(text: str) -> list[tuple[int, int]]:
    """Spans of `text` holding a Luhn-valid 13-19 digit number: one unseparated run, or
    consecutive short groups of a run (a card followed by a CVC or an expiry, say).
    Every one of them, also when one run holds several cards; in text order."""
    spans: list[tuple[int, int]] = []
    scanned = _Text(text)
    for match in _RUN.finditer(text):
        _run_spans(scanned, match.start(), match.group(0), spans)
    return sorted(spans)


def contains_card_number(text: str) -> bool:
    """True when `text` holds a Luhn-valid run of 13-19 digits (spaces/dashes allowed)."""
    if not text.isascii():  # most text is (ids, log lines): no call to fold its digits
        text = _ascii_digits(text)
    if _CARD_STRETCH.search(text) is None:
        return False
    return bool(_card_spans(text))


def redact_card_numbers(text: str) -> str:
    """Replace every card-number-like run by a fixed marker (for logs and messages)."""
    if not text.isascii():
        text = _ascii_digits(text)
    if _CARD_STRETCH.search(text) is None:
        return text
    spans = _card_spans(text)
    if not spans:
        return text
    pieces: list[str] = []
    at = 0
    for start, end in spans:
        pieces += (text[at:start], REDACTED)
        at = end
    pieces.append(text[at:])
    return "".join(pieces)


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, never making a card number: a cut
    through a number's last group, or between it and letters stuck to it, would leave
    other digits than were scanned (17 digits failing Luhn, cut to 16 that pass), so
    that group goes too. What is left before the cut was scanned as it stands."""
    if len(text) <= limit:
        return text
    end = limit
    if end and text[end - 1].isdecimal() and text[end].isalnum():
        while end and text[end - 1].isdecimal():
            end -= 1
    return text[:end]


def quoted(text: str, limit: int) -> str:
    """Caller text quoted back in an answer: cut to `limit` with clip, card numbers
    removed, in quotes."""
    return repr(redact_card_numbers(clip(text, limit)))
