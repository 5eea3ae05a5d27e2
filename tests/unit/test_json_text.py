"""json_text.encoder writes what json.JSONEncoder(...).encode writes, and refuses what
it refuses, with each set of options payorch uses (json.dumps' defaults for stored
JSON, the log line's ensure_ascii=False, the request fingerprint's compact one)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from payorch.domain.json_text import encoder

OPTIONS = [
    {},
    {"ensure_ascii": False},
    {"separators": (",", ":")},
]

_json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(["", "é", "日本", "\u2028", "\x00", '"\\', "\ud800", "💳"])
)
json_values = st.recursive(
    _json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers() | st.booleans(), inner, max_size=4)
        | st.tuples(inner, inner)
    ),
    max_leaves=20,
)


def _outcome(encode: Any, value: Any) -> tuple[Any, ...]:
    try:
        return ("text", encode(value))
    except Exception as exc:  # the error is what is compared
        return ("raised", type(exc), str(exc))


@pytest.mark.parametrize("options", OPTIONS, ids=repr)
@given(value=json_values)
@example(value={})
@example(value="plain text, top level")
@example(value={"note": "café ☕", "nested": {"list": [1, 2.5, None, True], "empty": {}}})
@example(value=[float("nan"), float("inf"), -0.0, 10**30, 1e-7])
def test_the_text_is_the_json_encoders_byte_for_byte(options: dict[str, Any], value: Any) -> None:
    expected = json.JSONEncoder(**options).encode
    encode = encoder(**options)
    for v in (value, [value], {"k": value}):
        assert _outcome(encode, v) == _outcome(expected, v)


@pytest.mark.parametrize("options", OPTIONS, ids=repr)
def test_what_the_json_encoder_refuses_is_refused_the_same_way(options: dict[str, Any]) -> None:
    expected = json.JSONEncoder(**options).encode
    encode = encoder(**options)
    circular: list[Any] = []
    circular.append(circular)
    looped: dict[str, Any] = {}
    looped["self"] = looped
    for value in ({"at": object()}, [{1, 2}], {(1, 2): "tuple key"}, circular, looped):
        outcome = _outcome(encode, value)
        assert outcome[0] == "raised"
        assert outcome == _outcome(expected, value)
    # Nothing left half-way: the next value encodes as before.
    assert encode({"after": [1, 2]}) == expected({"after": [1, 2]})
