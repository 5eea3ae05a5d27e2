"""What a refusal says back: bounded, and never a card number, whatever the request held."""

from __future__ import annotations

import pytest

from payorch.domain.card_data import contains_card_number, luhn_valid
from payorch.domain.merchant_config import InvalidMerchantConfig, MerchantConfig, MethodRule
from payorch.domain.payment import MethodType
from payorch.entrypoints.grpc.errors import error, invalid_argument

KNOWN = frozenset({"simulated", "stripe"})
CARD = "4000056655665556"


def _not_luhn(body: str) -> str:
    return body + next(d for d in "0123456789" if not luhn_valid(body + d))


def _problems(config: MerchantConfig) -> list[tuple[str, str]]:
    with pytest.raises(InvalidMerchantConfig) as refused:
        config.validate(KNOWN)
    return refused.value.problems


def test_unknown_processor_names_are_quoted_few_short_and_without_card_numbers() -> None:
    names = ("\x01" * 200_000, CARD, "x" * 16 + _not_luhn(CARD), "a", "b")
    rule = MethodRule(MethodType.CARD, processors=names)
    [(field, message)] = _problems(MerchantConfig("m_1", methods=(rule,)))
    assert field == "methods[0].processors"
    assert len(message) < 600 and "and 2 more" in message
    assert not contains_card_number(message)
    assert "known: simulated, stripe" in message


def test_unknown_currency_codes_are_quoted_few_short_and_without_card_numbers() -> None:
    codes = frozenset({"Z" * 100_000, CARD, "QQQ", "RRR"})
    [(field, message)] = _problems(MerchantConfig("m_1", allowed_currencies=codes))
    assert field == "allowed_currencies"
    assert len(message) < 300 and not contains_card_number(message)


def test_an_invalid_argument_answer_stays_small_whatever_it_lists() -> None:
    # A trailer over the transport's limit turns the answer into RESOURCE_EXHAUSTED.
    refused = invalid_argument([(f"methods[{i}]" * 100, "x" * 10_000) for i in range(10_000)])
    size = sum(len(v) for _, v in refused.status.trailing_metadata)
    assert size < 120_000
    assert len(refused.status.details) <= 1000
    assert "and 9950 more problems" in str(refused.status.trailing_metadata)


@pytest.mark.parametrize("build", [invalid_argument, error])
def test_a_message_cut_to_its_length_never_ends_in_a_card_number(build) -> None:
    # The message is cut at 1000 characters: through the 17 digits (after "reason: ").
    if build is invalid_argument:
        refused = build([("reason", "x" * 976 + _not_luhn(CARD))])
    else:
        refused = build(3, "x" * 984 + _not_luhn(CARD), "", "reason")
    trailer = b"".join(v for _, v in refused.status.trailing_metadata if isinstance(v, bytes))
    assert not contains_card_number(refused.status.details)
    assert not contains_card_number(trailer.decode("latin-1"))
