"""Page tokens: every listing decodes them alike, and refuses any it never issued."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from payorch.entrypoints.grpc import installment_mappers, mappers, observability_mappers

T0 = datetime(2026, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def _token(raw: str | bytes) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _violation_cursor(token: str) -> Any:
    return observability_mappers.decode_violation_token(token)


# (listing, decoder, the error it answers with)
DECODERS: list[Any] = [
    pytest.param(mappers.decode_page_token, mappers.InvalidPageToken, id="ListPayments"),
    pytest.param(
        installment_mappers.decode_page_token, mappers.InvalidPageToken, id="installments"
    ),
    pytest.param(_violation_cursor, observability_mappers.InvalidField, id="violations"),
]

NEVER_ISSUED = {
    "year 1, made UTC": _token("0001-01-01T00:00:00+01:00|x_1"),
    "year 9999, made UTC": _token("9999-12-31T23:59:59-01:00|x_1"),
    "NUL in the id": _token("2020-01-01T00:00:00+00:00|x_\x00"),
    "a control character in the id": _token("2020-01-01T00:00:00+00:00|x_\x1b"),
    "a non-ASCII id": _token("2020-01-01T00:00:00+00:00|x_é"),
    "no id": _token("2020-01-01T00:00:00+00:00|"),
    "an id too long": _token("2020-01-01T00:00:00+00:00|" + "x" * 200),
    "no offset": _token("2020-01-01T00:00:00|x_1"),
    "no time": _token("|x_1"),
    "not base64": "!!!",
    "not UTF-8": _token(b"\xff\xfe|x_1"),
}


@pytest.mark.parametrize("raw", list(NEVER_ISSUED.values()), ids=list(NEVER_ISSUED))
@pytest.mark.parametrize(("decode", "refused"), DECODERS)
def test_a_page_token_this_server_never_issued_is_refused_by_every_listing(
    decode: Callable[[str], Any], refused: type[Exception], raw: str
) -> None:
    with pytest.raises(refused):
        decode(raw)


@pytest.mark.parametrize("at", [T0, T0.astimezone(timezone(timedelta(hours=-5)))])
def test_a_page_token_this_server_issued_gives_back_its_time_in_utc_and_its_id(
    at: datetime,
) -> None:
    when, object_id = mappers.decode_cursor(mappers.encode_cursor(at, "cv_1"), max_id_len=64)
    assert (when, object_id) == (T0, "cv_1") and when.tzinfo is UTC
    assert mappers.decode_page_token("") is None
    assert observability_mappers.decode_violation_token("") is None
    assert installment_mappers.decode_page_token("") is None
