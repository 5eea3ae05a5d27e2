"""Card numbers must never enter the system: detection and redaction."""

from __future__ import annotations

import re
import sys
from types import FrameType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payorch.domain import card_data
from payorch.domain.card_data import (
    _ascii_digits,
    _card_spans,
    clip,
    contains_card_number,
    luhn_valid,
    redact_card_numbers,
)

MARKER = "[card number removed]"

CARD_NUMBERS = [
    "4242424242424242",  # Visa test card, plain
    "4000 0000 0000 0002",  # declined test card, spaced
    "4000-0027-6000-3184",  # 3DS test card, dashed
    "378282246310005",  # Amex, 15 digits
    "5555555555554444",  # Mastercard
    "5105 1051 0510 5100",  # Mastercard, spaced
    "4222222222222",  # Visa, 13 digits
    "4000000000000000006",  # 19 digits, Luhn-valid
    "6011 0000 0000 0000 001",  # 19 digits, spaced
]


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("79927398713", True),
        ("79927398710", False),
        ("4242424242424242", True),
        ("4242424242424241", False),
        ("5555555555554444", True),
        ("5555555555554445", False),
        ("0", True),
        ("18", True),
        ("19", False),
    ],
)
def test_luhn_checksum(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


@pytest.mark.parametrize("number", CARD_NUMBERS)
def test_luhn_valid_card_number_is_detected(number: str) -> None:
    assert contains_card_number(number)


@pytest.mark.parametrize("number", CARD_NUMBERS)
def test_card_number_inside_free_text_is_detected(number: str) -> None:
    assert contains_card_number(f"customer wrote: my card is {number}, thanks!")


@pytest.mark.parametrize(
    "text",
    [
        "4242424242424241",  # 16 digits, Luhn-invalid
        "4000 0000 0000 0003",  # spaced, Luhn-invalid
        "424242424242",  # 12 digits
        "42424242424242424242",  # 20-digit run: too long to be a card
        "4242424242424242424242424",  # 25-digit run
        "1999",
        "19.99",
        "order 12345 for 1999 cents",
        "pm_card_visa",
        "2026-01-31",
        "",
    ],
)
def test_text_without_a_card_number_is_not_flagged(text: str) -> None:
    assert not contains_card_number(text)


def test_digits_separated_by_two_spaces_are_separate_runs() -> None:
    # Each half is too short to be a card on its own.
    assert not contains_card_number("42424242  42424242")


@pytest.mark.parametrize("number", CARD_NUMBERS)
def test_redaction_removes_the_card_number_and_keeps_the_text(number: str) -> None:
    redacted = redact_card_numbers(f"pay with {number} please")
    assert redacted == f"pay with {MARKER} please"
    assert not contains_card_number(redacted)


def test_redaction_removes_every_card_number() -> None:
    redacted = redact_card_numbers("a 4242424242424242 b 378282246310005 c")
    assert redacted == f"a {MARKER} b {MARKER} c"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4242 4242 4242 4242 4000 0566 5566 5556", f"{MARKER} {MARKER}"),
        ("4242424242424242-4000056655665556", f"{MARKER}-{MARKER}"),
        ("4242-4242-4242-4242-378282246310005", f"{MARKER}-{MARKER}"),
        ("x 4242 4242 4242 4242 12 27 5555 5555 5555 4444 y", f"x {MARKER} 12 27 {MARKER} y"),
    ],
)
def test_redaction_removes_every_card_number_of_one_digit_run(text: str, expected: str) -> None:
    assert redact_card_numbers(text) == expected
    assert not contains_card_number(redact_card_numbers(text))


def test_redaction_leaves_amounts_and_invalid_numbers_alone() -> None:
    text = "amount 1999, ref 4242424242424241, date 2026-01-31"
    assert redact_card_numbers(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "4242 4242 4242 4242 123",  # number + CVC
        "4242424242424242 12 27",  # number + expiry
        "4000-0000-0000-0002-123",
        "order 1 4242424242424242",
    ],
)
def test_card_number_next_to_other_digit_groups_is_detected(text: str) -> None:
    assert contains_card_number(text)


def test_card_number_in_non_ascii_digits_is_detected() -> None:
    arabic_indic = "4242424242424242".translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    assert contains_card_number(arabic_indic)


_SCAN_ALPHABET = "0123456789 -ab_.٣٤５"


def _stuck(text: str, at: int, step: int, any_letter: bool) -> bool:
    """Whether the character at `at` is a letter of a word that spares the digits next
    to it: a word of hex digits only (any word at all with `any_letter`)."""
    if not (0 <= at < len(text) and text[at].isalpha()):
        return False
    while 0 <= at < len(text) and text[at].isalnum() and text[at] != "_":
        if text[at] not in "0123456789abcdefABCDEF" and not any_letter:
            return False
        at += step
    return True


def _reference_contains(text: str, *, any_letter: bool = False) -> bool:
    """The scan as the rules say it, the slow way: every run of digit groups, every
    stretch of its groups, summed from scratch. With `any_letter`, the earlier rule:
    any letter next to a number made it part of a token."""
    text = _ascii_digits(text)
    for run in re.finditer(r"[0-9]+(?:[ -][0-9]+)*", text):
        groups = [
            (run.start() + g.start(), run.start() + g.end())
            for g in re.finditer(r"[0-9]+", run.group())
        ]
        for i, (start, end) in enumerate(groups):
            left = _stuck(text, start - 1, -1, any_letter)
            right = _stuck(text, end, 1, any_letter)
            if 13 <= end - start <= 19 and not (left and right) and luhn_valid(text[start:end]):
                return True
            digits = ""
            for g_start, g_end in groups[i:]:
                spared = _stuck(text, g_start - 1, -1, any_letter) or _stuck(
                    text, g_end, 1, any_letter
                )
                if g_end - g_start > 6 or spared:
                    break
                digits += text[g_start:g_end]
                if 13 <= len(digits) <= 19 and luhn_valid(digits):
                    return True
    return False


def _check_digit(body: str) -> str:
    return next(d for d in "0123456789" if luhn_valid(body + d))


@st.composite
def _numbers(draw: st.DrawFn) -> str:
    """A Luhn-valid 13-19 digit number, whole or in groups of 1-6 digits."""
    body = draw(st.text(alphabet="0123456789", min_size=12, max_size=18))
    digits = body + _check_digit(body)
    sizes = draw(st.lists(st.integers(1, 6), min_size=1, max_size=19))
    if draw(st.booleans()):
        return digits
    groups, at = [], 0
    for size in sizes * 19:
        if at >= len(digits):
            break
        groups.append(digits[at : at + size])
        at += size
    return draw(st.sampled_from(" -")).join(groups)


# Text made of digit groups, separators, letters and card numbers, in any order.
_PIECES = st.one_of(
    st.text(alphabet="0123456789", min_size=1, max_size=20),
    st.sampled_from([" ", "-", "  ", " -", "a", "F", "x", "exp", "_", ".", "٣", "５", "é"]),
    st.text(alphabet="abcdefABCDEF0123456789xyz", min_size=1, max_size=6),
    _numbers(),
)
_TEXTS = st.lists(_PIECES, max_size=12).map("".join) | st.text(alphabet=_SCAN_ALPHABET, max_size=60)


@settings(max_examples=1000)
@given(_TEXTS)
def test_the_scan_finds_what_the_slow_reference_finds(text: str) -> None:
    assert contains_card_number(text) is _reference_contains(text)
    redacted = redact_card_numbers(text)
    assert not _reference_contains(redacted)
    # Only card digits go: what is left around the markers is the text as it was.
    kept = redacted.split(MARKER)
    assert all(piece in _ascii_digits(text) for piece in kept)


# -- letters next to a number ------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "4242 4242 4242 4242exp 12/25",
        "Visa4242-4242-4242-4242",
        "pm_x4000056655665556x",
        "card4242424242424242exp",
        "Mastercard5555555555554444cvc",
        "tok_visa4000056655665556",
        "Zahlung mit Karte4242424242424242über",
        "my card is 4242 4242 4242 4242, exp 12/27",
    ],
)
def test_a_card_number_stuck_to_a_word_is_a_card_number(text: str) -> None:
    assert contains_card_number(text)
    assert not contains_card_number(redact_card_numbers(text))


@pytest.mark.parametrize(
    "text",
    [
        # The 16 digits of each would pass Luhn: only the hex around them spares them.
        "abcdefab-4242-4242-4242-4242abcdef01",  # a UUID whose edge groups touch letters
        "4242aaaa-4242-4242-4242-4242424242ab",
        "pay_3f2a4242424242424242b1c0ffee",  # a hex id, the number inside it
        "evt_a4000056655665556d" + "0" * 10,
        "sha256:ab4242424242424242cd",
        # Ordinary ids: no run of 13 digits at all.
        "pi_3MtwBwLkdIwHu7ix28a3tqPa",
        "pm_1MqLiJLkdIwHu7ixUEgbFdYF",
        "pm_card_visa",
        "cus_NffrFeUfNV2Hib",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",  # a ULID
    ],
)
def test_an_ordinary_id_is_not_a_card_number(text: str) -> None:
    assert not contains_card_number(text)


_NON_HEX_WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFXYZéß", min_size=1).filter(
    lambda w: any(ch not in "abcdefABCDEF" for ch in w)
)


@settings(max_examples=500)
@given(_numbers(), _NON_HEX_WORDS, _NON_HEX_WORDS, st.sampled_from(["left", "right", "both"]))
def test_a_card_number_stuck_to_any_word_but_a_hex_one_is_found(
    number: str, before: str, after: str, where: str
) -> None:
    text = (before if where != "right" else "") + number + (after if where != "left" else "")
    assert contains_card_number(text)
    assert not contains_card_number(redact_card_numbers(text))


_HEX_TEXT = st.text(alphabet="0123456789abcdefABCDEF -_", max_size=60) | st.uuids().map(str)


@settings(max_examples=1000)
@given(_HEX_TEXT | st.lists(st.uuids().map(str) | _numbers(), max_size=4).map("-".join))
def test_hex_text_is_judged_as_before_letters_stopped_hiding_numbers(text: str) -> None:
    # Letters hide a number only in hex words now: text whose letters are all hex
    # digits (hex ids, UUIDs) is refused exactly as often as it was.
    assert contains_card_number(text) is _reference_contains(text, any_letter=True)


def _scan_steps(text: str) -> int:
    """Bytecode instructions the scan of `text` runs in card_data: its work, counted
    (the same on any machine at any load), where a clock would measure the machine."""
    steps = 0

    def count(frame: FrameType, event: str, arg: object) -> object:
        nonlocal steps
        steps += event == "opcode"
        return count

    def enter(frame: FrameType, event: str, arg: object) -> object:
        if frame.f_code.co_filename != card_data.__file__:
            return None
        frame.f_trace_lines = False
        frame.f_trace_opcodes = True
        return count

    before = sys.gettrace()
    sys.settrace(enter)
    try:
        contains_card_number(text)
        redact_card_numbers(text)
    finally:
        sys.settrace(before)
    return steps


# What the steps of a linear scan may vary by from one stretch of a repeated text to
# another of the same length (where its cards fall), about 6 groups' work; a scan
# that is quadratic on a run exceeds it by 100x and more (see below).
_STEP_SLACK = 1_000


def _assert_linear(unit: str, k: int) -> int:
    # The scan of unit * n units, s(n): a linear scan costs the same for k more units
    # wherever they are added, a quadratic one more the longer the text already is.
    # Compared past the first k units, so the fixed cost of a scan cancels out.
    s1, s2, s3, s4 = (_scan_steps(unit * (m * k)) for m in (1, 2, 3, 4))
    assert s4 - s3 <= s2 - s1 + _STEP_SLACK, (s1, s2, s3, s4)
    return s2 - s1


@pytest.mark.parametrize(
    "unit",
    [
        "1 ",  # one-digit groups: 17 s for "1 " * 500_000 when the scan was quadratic
        "12-",
        "1-1 12 123 1234 ",
        "4242 4242 4242 4242 ",  # a card every 20 characters
        "\uff11 ",  # fullwidth digits, read as ASCII ones first
        "1" + " 1" * 12 + "x",
    ],
)
def test_the_scan_takes_time_linear_in_the_text(unit: str) -> None:
    assert _assert_linear(unit, 300) > 0  # the steps counted are the scan's


# A stretch of a run of short digit groups, to repeat: the shape the scan was slow on.
_RUN_UNITS = st.lists(
    st.tuples(st.text(alphabet="0123456789", min_size=1, max_size=6), st.sampled_from(" -")),
    min_size=1,
    max_size=4,
).map(lambda groups: "".join(digits + separator for digits, separator in groups))


@settings(max_examples=30)
@given(_RUN_UNITS)
def test_the_scan_of_any_repeated_run_takes_time_linear_in_it(unit: str) -> None:
    _assert_linear(unit, 40)


@settings(max_examples=500)
@given(st.text(alphabet=_SCAN_ALPHABET, max_size=60))
def test_the_quick_rejection_agrees_with_the_full_scan(text: str) -> None:
    # contains_card_number skips the span scan for text without 13 close digits;
    # it must say what the full scan says.
    full = bool(_card_spans(_ascii_digits(text)))
    assert contains_card_number(text) is full
    assert (redact_card_numbers(text) != _ascii_digits(text)) is full


def _not_luhn(body: str) -> str:
    """body and one more digit, so that the whole fails Luhn."""
    return body + next(d for d in "0123456789" if not luhn_valid(body + d))


def test_clipping_never_cuts_a_number_into_a_card_number() -> None:
    # 17 digits that fail Luhn; their first 16 are a Visa test card.
    text = "x" * 184 + _not_luhn("4000056655665556")
    assert not contains_card_number(text)
    assert contains_card_number(text[:200])  # what a plain cut makes
    assert clip(text, 200) == "x" * 184


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("abc 123 456", 9, "abc 123 "),  # cut through a group: the group goes
        ("abc 123 456", 8, "abc 123 "),
        ("abc 123 456", 7, "abc 123"),  # cut after a whole group, before a space
        ("abc 123abc", 7, "abc "),  # cut between digits and the letters stuck to them
        ("abcdef", 3, "abc"),
    ],
)
def test_clipping_cuts_ordinary_text_where_asked(text: str, limit: int, expected: str) -> None:
    assert clip(text, limit) == expected


@settings(max_examples=1000)
@given(_TEXTS, st.integers(0, 80))
def test_clipping_text_without_a_card_number_never_makes_one(text: str, limit: int) -> None:
    clipped = clip(text, limit)
    assert len(clipped) <= limit and text.startswith(clipped)
    if not contains_card_number(text):
        assert not contains_card_number(clipped)
