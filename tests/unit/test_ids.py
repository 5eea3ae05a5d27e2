"""Ids payorch makes never look like card numbers, so the card guard never redacts them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

from hypothesis import given
from hypothesis import strategies as st

from payorch.app.ids import new_id, uuid4_hex
from payorch.domain.card_data import contains_card_number, redact_card_numbers

CLEAN = "f" * 32


def source(*hexes: str) -> Callable[[], str]:
    it: Iterator[str] = iter(hexes)
    return lambda: next(it)


def test_a_payment_id_can_hold_a_run_the_card_guard_takes_for_a_card() -> None:
    # A real id of a random draw: 13 digits after the underscore pass the Luhn check.
    drawn = "pay_0985149354724d3297120b797039e97b"
    assert contains_card_number(drawn)
    assert redact_card_numbers(drawn).startswith("pay_[card number removed]")


def test_an_id_whose_hex_starts_with_a_card_like_run_is_drawn_again() -> None:
    assert new_id("pay", source("4242424242424242" + "ab" * 8, CLEAN)) == f"pay_{CLEAN}"


def test_an_id_whose_hex_ends_with_a_card_like_run_is_drawn_again() -> None:
    assert new_id("evt", source("ab" * 8 + "4242424242424242", CLEAN)) == f"evt_{CLEAN}"


def test_digits_inside_the_hex_between_letters_are_kept() -> None:
    inside = "ab4242424242424242abcdefabcdefab"
    assert new_id("cv", source(inside)) == f"cv_{inside}"


# Luhn-valid runs of 13-19 digits, as a random hex could hold them.
CARD_LIKE = ["0985149354724", "378282246310005", "4242424242424242", "6011111111111117"]
HEX = "0123456789abcdef"


@st.composite
def drawn_hex(draw: st.DrawFn) -> str:
    """32 hex digits: random, or with a card-like run at its start or its end."""
    where = draw(st.sampled_from(["none", "start", "end"]))
    if where == "none":
        return draw(st.text(HEX, min_size=32, max_size=32))
    run = draw(st.sampled_from(CARD_LIKE))
    # A letter next to the run keeps the digits around it from joining it.
    pad = draw(st.text("abcdef", min_size=1, max_size=1)) + draw(
        st.text(HEX, min_size=31 - len(run), max_size=31 - len(run))
    )
    return run + pad if where == "start" else pad[::-1] + run


@given(st.lists(drawn_hex(), max_size=8))
def test_the_first_candidate_the_guard_passes_is_the_id(hexes: list[str]) -> None:
    made = new_id("pay", source(*hexes, CLEAN))
    expected = next(f"pay_{h}" for h in [*hexes, CLEAN] if not contains_card_number(f"pay_{h}"))
    assert made == expected
    assert redact_card_numbers(made) == made


def test_ids_are_a_prefix_and_the_hex_of_a_random_uuid4() -> None:
    made = {new_id("rpc") for _ in range(200)}
    assert len(made) == 200
    for value in made:
        assert re.fullmatch(r"rpc_[0-9a-f]{32}", value)
        assert uuid.UUID(hex=value.removeprefix("rpc_")).version == 4
    assert uuid.UUID(hex=uuid4_hex()).variant == uuid.RFC_4122
