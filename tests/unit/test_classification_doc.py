"""docs/classification.md must match classify(): every row, every column, every table key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from payorch.domain.classification import (
    CALLER_ERRORS,
    DECLINE_CODES,
    ERROR_CODES,
    ERROR_TYPES,
    EXCEPTIONS,
    INFRASTRUCTURE_CODES,
    KINDS,
    NO_RETRY_ADVICE,
    classify,
    is_infrastructure_failure,
)
from payorch.domain.results import ErrorCode, ProcessorResponse, ResponseKind

DOC = Path(__file__).resolve().parents[2] / "docs" / "classification.md"

COLUMNS = [
    "Response",
    "Outcome",
    "Error code",
    "Retry now",
    "Retry later",
    "Contract violation",
    "Unmapped",
    "Counts against health",
]

_CONVERT: dict[str, Any] = {
    "kind": ResponseKind,
    "http_status": int,
    "amount_captured_minor": int,
    "retry_after_s": float,
    "should_retry": lambda v: {"true": True, "false": False}[v],
    "indeterminate": lambda v: {"true": True, "false": False}[v],
    "charge_not_sent": lambda v: {"true": True, "false": False}[v],
}
_STRING_FIELDS = {
    "processor_payment_id",
    "error_type",
    "code",
    "decline_code",
    "param",
    "advice_code",
    "message",
    "request_id",
    "next_action_type",
    "client_secret",
    "exception",
}
_YES_NO = {"yes": True, "no": False}


@dataclass(frozen=True)
class DocRow:
    line: int
    fields: dict[str, str]
    cells: dict[str, str]

    @property
    def response(self) -> ProcessorResponse:
        kwargs: dict[str, Any] = {"kind": ResponseKind.ERROR}
        for key, value in self.fields.items():
            if key in _CONVERT:
                kwargs[key] = _CONVERT[key](value)
            elif key in _STRING_FIELDS:
                kwargs[key] = value
            else:
                raise AssertionError(f"line {self.line}: unknown response field {key!r}")
        return ProcessorResponse(**kwargs)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_doc(text: str) -> list[DocRow]:
    """Rows of every Markdown table whose first header is `Response`."""
    rows: list[DocRow] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        is_header = (
            line.startswith("|")
            and i + 1 < len(lines)
            and re.fullmatch(r"\|(\s*-+\s*\|)+", lines[i + 1].strip()) is not None
        )
        if not is_header or _cells(line)[0] != "Response":
            i += 1
            continue
        header = _cells(line)
        assert header == COLUMNS, f"line {i + 1}: table columns {header}"
        i += 2
        while i < len(lines) and lines[i].startswith("|"):
            cells = _cells(lines[i])
            assert len(cells) == len(header), f"line {i + 1}: {len(cells)} cells"
            spec = re.fullmatch(r"`([^`]*)`", cells[0])
            assert spec is not None, f"line {i + 1}: response must be one `code` span"
            fields = dict(token.split("=", 1) for token in spec.group(1).split())
            rows.append(DocRow(i + 1, fields, dict(zip(header, cells, strict=True))))
            i += 1
    return rows


ROWS = parse_doc(DOC.read_text(encoding="utf-8"))


def test_the_doc_has_a_classification_table() -> None:
    # One row per table key at least; an emptied or unparsable doc must not pass silently.
    keys = len(DECLINE_CODES) + len(ERROR_CODES) + len(CALLER_ERRORS) + len(ERROR_TYPES)
    keys += len(EXCEPTIONS) + len(KINDS)
    assert len(ROWS) >= keys


@pytest.mark.parametrize("row", ROWS, ids=[r.cells["Response"].strip("`") for r in ROWS])
def test_doc_row_matches_classify(row: DocRow) -> None:
    c = classify(row.response)
    documented = {
        "Outcome": row.cells["Outcome"],
        "Error code": row.cells["Error code"],
        "Retry now": _YES_NO[row.cells["Retry now"]],
        "Retry later": _YES_NO[row.cells["Retry later"]],
        "Contract violation": _YES_NO[row.cells["Contract violation"]],
        "Unmapped": _YES_NO[row.cells["Unmapped"]],
        "Counts against health": _YES_NO[row.cells["Counts against health"]],
    }
    actual = {
        "Outcome": c.outcome.value,
        "Error code": c.error_code.value,
        "Retry now": c.retry_now,
        "Retry later": c.retry_later,
        "Contract violation": c.contract_violation,
        "Unmapped": c.unmapped,
        "Counts against health": is_infrastructure_failure(c),
    }
    assert documented == actual, f"docs/classification.md line {row.line}"


def _documented(predicate: Any) -> bool:
    return any(predicate(r.fields) for r in ROWS)


@pytest.mark.parametrize("key", sorted(DECLINE_CODES))
def test_every_decline_code_is_documented(key: str) -> None:
    assert _documented(
        lambda f: (
            f.get("error_type") == "card_error"
            and (
                f.get("decline_code") == key or (f.get("code") == key and not f.get("decline_code"))
            )
        )
    ), f"DECLINE_CODES[{key!r}] has no row in docs/classification.md"


@pytest.mark.parametrize("advice", sorted(NO_RETRY_ADVICE))
def test_every_advice_against_retrying_is_documented(advice: str) -> None:
    assert _documented(
        lambda f: f.get("error_type") == "card_error" and f.get("advice_code") == advice
    ), f"NO_RETRY_ADVICE {advice!r} has no row in docs/classification.md"


@pytest.mark.parametrize("key", sorted(ERROR_CODES))
def test_every_error_code_is_documented(key: str) -> None:
    assert _documented(
        lambda f: (
            f.get("code") == key
            and f.get("error_type") != "card_error"
            and f.get("http_status") != "429"
        )
    ), f"ERROR_CODES[{key!r}] has no row in docs/classification.md"


@pytest.mark.parametrize("key", sorted(CALLER_ERRORS))
def test_every_callers_parameter_error_is_documented(key: tuple[str, str]) -> None:
    code, param = key
    assert _documented(
        lambda f: (
            f.get("error_type") == "invalid_request_error"
            and f.get("code", "") == code
            and f.get("param") == param
        )
    ), f"CALLER_ERRORS[{key!r}] has no row in docs/classification.md"


@pytest.mark.parametrize("key", sorted(ERROR_TYPES))
def test_every_error_type_is_documented(key: str) -> None:
    assert _documented(
        lambda f: f.get("error_type") == key and f.get("http_status") not in ("409", "429")
    ), f"ERROR_TYPES[{key!r}] has no row in docs/classification.md"


@pytest.mark.parametrize("key", sorted(EXCEPTIONS))
def test_every_sdk_exception_is_documented(key: str) -> None:
    assert _documented(lambda f: f.get("exception") == key), (
        f"EXCEPTIONS[{key!r}] has no row in docs/classification.md"
    )


@pytest.mark.parametrize("kind", sorted(k.value for k in KINDS))
def test_every_non_error_kind_is_documented(kind: str) -> None:
    assert _documented(lambda f: f.get("kind") == kind), (
        f"KINDS[{kind!r}] has no row in docs/classification.md"
    )


def test_the_infrastructure_codes_listed_in_the_prose_match_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"only for these error codes:(.*?)\.\s+They count", text, re.DOTALL)
    assert match is not None
    listed = {ErrorCode(code) for code in re.findall(r"`([a-z_]+)`", match.group(1))}
    assert listed == INFRASTRUCTURE_CODES


def test_the_parser_reads_fields_and_cells_of_a_row() -> None:
    # Guards the guard: a parser that read nothing would make the row tests vacuous.
    [row] = parse_doc(
        "| " + " | ".join(COLUMNS) + " |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
        "| `http_status=500 error_type=api_error should_retry=false` "
        "| soft | processor_error | no | yes | no | no | yes |\n"
    )
    assert row.response == ProcessorResponse(
        ResponseKind.ERROR, http_status=500, error_type="api_error", should_retry=False
    )
    assert row.cells["Retry now"] == "no"
