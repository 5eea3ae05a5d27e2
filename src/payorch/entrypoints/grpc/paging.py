"""A listing's page, kept under the largest answer the server sends."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

# What an answer keeps free of items: its page token and the framing around them.
_ROOM_FOR_THE_REST = 1024


def page_bytes(max_answer_bytes: int) -> int:
    """How many bytes of items a page may hold under an answer of `max_answer_bytes`."""
    return max_answer_bytes - _ROOM_FOR_THE_REST


def fill_page(
    out: Any, page: Sequence[T], write: Callable[[Any, T], None], limit: int, more: bool
) -> T | None:
    """Write `page` into the repeated message field `out`, cutting it short rather
    than outgrow `limit` bytes (at least one item goes: its own limits hold it under
    an answer; a page of a hundred is not). Returns the item the next page starts
    after, or None when nothing follows: `more` says whether any did past `page`."""
    used = 0
    for i, item in enumerate(page):
        written = out.add()
        write(written, item)
        used += written.ByteSize() + 8  # its tag and length
        if used > limit and i > 0:
            del out[-1]
            return page[i - 1]
    return page[-1] if more and page else None
