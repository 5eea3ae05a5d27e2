"""JSON text as `json.JSONEncoder(...).encode` writes it, for the hot path.

`JSONEncoder.encode` builds a new C encoder on every call (`iterencode`), through
three Python calls. A payment encodes a dozen values (its rows' JSON columns, its
fingerprint, its log line): `encoder` builds the C encoder once. Same text, byte for
byte (tests/unit/test_json_text.py); what the C encoder cannot encode (a value
json refuses, a circular one) goes to `JSONEncoder.encode`, which raises its own error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)


def encoder(
    *, ensure_ascii: bool = True, separators: tuple[str, str] = (", ", ": ")
) -> Callable[[Any], str]:
    """`json.JSONEncoder(ensure_ascii=..., separators=...).encode`, built once."""
    reference = json.JSONEncoder(ensure_ascii=ensure_ascii, separators=separators)
    slow: Callable[[Any], str] = reference.encode
    if _c_make_encoder is None:
        return slow
    item_separator, key_separator = separators
    # The arguments JSONEncoder.iterencode passes, with no markers (no circular
    # check): a circular value fails in C and JSONEncoder.encode then says so.
    fast = _c_make_encoder(
        None,
        reference.default,
        json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring,
        None,
        key_separator,
        item_separator,
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )

    def encode(value: Any) -> str:
        try:
            return "".join(fast(value, 0))
        except Exception:  # json's own error, from JSONEncoder.encode
            return slow(value)

    return encode
