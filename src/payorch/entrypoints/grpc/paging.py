"""A listing's page, kept under the largest answer the server sends."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from google.protobuf.message import Message

T = TypeVar("T")

# What an answer keeps free of items: its page token and the framing around them.
_ROOM_FOR_THE_REST = 1024


def page_bytes(max_answer_bytes: int) -> int:
    """How many bytes of items a page may hold under an answer of `max_answer_bytes`."""
    return max_answer_bytes - _ROOM_FOR_THE_REST


def copied(to_pb: Callable[[T], Message]) -> Callable[[Any, T], None]:
    """A `write` for `fill_page` from a mapper that makes the item's message."""
    return lambda out, item: out.CopyFrom(to_pb(item))


def fill_page(
    out: Any,
    found: Sequence[T],
    size: int,
    write: Callable[[Any, T], None],
    limit: int,
    token_of: Callable[[T], str],
) -> str:
    """Write the first `size` of `found` (fetched one past the page, to know whether
    more follow) into the repeated message field `out`, cutting the page short rather
    than outgrow `limit` bytes: at least one item goes, its own limits hold it under an
    answer; a page of a hundred is not. Returns the next page's token, "" for none."""
    page = found[:size]
    used = 0
    for i, item in enumerate(page):
        written = out.add()
        write(written, item)
        used += written.ByteSize() + 8  # its tag and length
        if used > limit and i > 0:
            del out[-1]
            return token_of(page[i - 1])
    return token_of(page[-1]) if len(found) > size else ""
