"""README.md and docs/ name what the code has, under the names and defaults it has.

Many changes touch the settings, error reasons, webhook types and metrics; a page
that names one the code no longer has (or leaves out one it added) misleads every
operator who reads it. Each check walks the code, so a new setting, reason, type or
metric is covered with no change here."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
from dataclasses import MISSING, fields
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import payorch.domain
from payorch.adapters.metrics import Metrics
from payorch.adapters.payment_metrics import PaymentMetrics
from payorch.app.payments import MAX_CALL_TIMEOUT_S, longest_settle_s
from payorch.app.router import RUN_LIMIT_S
from payorch.app.webhook_delivery import EVENT_NAMES, EVENT_TYPES
from payorch.bootstrap import MAX_LEASE_S, check_settings
from payorch.domain.events import DomainEvent
from payorch.domain.webhook_delivery import event_type, webhook_body
from payorch.entrypoints.grpc.server import SERVICES
from payorch.settings import SECRETS, InvalidSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCS = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)

# Read by the CLI client and the test and benchmark harnesses, not by the server.
NOT_SETTINGS = {
    "PAYORCH_ADDRESS": ROOT / "src" / "payorch" / "entrypoints",
    "PAYORCH_API_KEY": ROOT / "src" / "payorch" / "entrypoints",
    "PAYORCH_HTTP_URL": ROOT / "src" / "payorch" / "entrypoints",
    "PAYORCH_TEST_POSTGRES_URL": ROOT / "tests",
    "PAYORCH_BENCH_POSTGRES_URL": ROOT / "bench",
}
# Settings read under another name than their field's (the *_FILE secrets are extra):
# PAYORCH_SIMULATE_<NAME>, one variable per processor.
SPECIAL_FIELDS = {"simulate_by_processor"}
PREFIX_SETTINGS = {"PAYORCH_SIMULATE": "simulate_by_processor"}


def _var(name: str) -> str:
    return f"PAYORCH_{name.upper()}"


SETTINGS = {_var(f.name): f for f in fields(Settings) if f.name not in SPECIAL_FIELDS}
SECRET_FILES = {f"{_var(name)}_FILE" for name in SECRETS}


def _documented_variables() -> tuple[set[str], set[str]]:
    """Full names, and prefixes written as `PAYORCH_HEALTH_*` or `PAYORCH_SIMULATE_<NAME>`."""
    names, prefixes = set(), set()
    for m in re.finditer(r"PAYORCH_[A-Z0-9_]*[A-Z0-9](_\*|_<)?", DOCS):
        (prefixes if m.group(1) else names).add(m.group(0).rstrip("_*<"))
    return names, prefixes


def test_every_setting_the_server_reads_is_documented() -> None:
    names, _ = _documented_variables()
    assert sorted(set(SETTINGS) - names) == []


def test_every_documented_variable_is_read_under_that_name() -> None:
    names, prefixes = _documented_variables()
    unknown = names - set(SETTINGS) - SECRET_FILES - set(NOT_SETTINGS)
    assert sorted(unknown) == []
    assert {f.name for f in fields(Settings)} >= set(PREFIX_SETTINGS.values())
    read = [*SETTINGS, *(p + "_" for p in PREFIX_SETTINGS)]
    assert sorted(p for p in prefixes if not any(v.startswith(p + "_") for v in read)) == []
    for var, where in NOT_SETTINGS.items():
        assert any(var in f.read_text(encoding="utf-8") for f in where.rglob("*.py")), var


def _table_rows() -> list[tuple[str, str, str, list[str]]]:
    """(page, variable, default cell, cells) of each settings table row naming one variable."""
    rows = []
    for page in PAGES:
        column = None
        for line in page.read_text(encoding="utf-8").splitlines():
            if not line.startswith("|"):
                column = None
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            lowered = [c.lower() for c in cells]
            if "default" in lowered and "variable" in lowered:
                column = lowered.index("default")
                continue
            named = re.findall(r"PAYORCH_[A-Z0-9_]*[A-Z0-9]", cells[0])
            if column is not None and len(named) == 1 and named[0] in SETTINGS:
                rows.append((page.name, named[0], cells[column].strip("`"), cells))
    return rows


TABLE_ROWS = _table_rows()
TABLE_DEFAULTS = [(page, var, default) for page, var, default, _ in TABLE_ROWS]


def test_the_settings_tables_are_found() -> None:
    pages = {page for page, _, _ in TABLE_DEFAULTS}
    assert {"README.md", "health.md", "installments.md", "observability.md"} <= pages
    assert len(TABLE_DEFAULTS) >= 40


@pytest.mark.parametrize(("page", "var", "cell"), TABLE_DEFAULTS, ids=lambda v: str(v))
def test_a_documented_default_is_the_settings_default(page: str, var: str, cell: str) -> None:
    f = SETTINGS[var]
    default = f.default if f.default is not MISSING else None
    if isinstance(default, bool):
        assert cell == str(int(default)), f"{page}: {var} defaults to {int(default)}"
    elif isinstance(default, int | float):
        assert float(cell.replace(",", "")) == default, f"{page}: {var} defaults to {default}"
    elif default == "":
        # None, said as such: "-", "(off)", "Stripe's", "(exporter's default)".
        assert cell in ("", "-") or cell.startswith("(") or "'" in cell, f"{page}: {var}"
    else:
        assert cell == default, f"{page}: {var} defaults to {default!r}"


def _documented_ranges() -> list[tuple[str, str, str, str]]:
    """(page, variable, low, high) of each settings row that gives a range `low..high`."""
    ranges = []
    for page, var, _, cells in TABLE_ROWS:
        for low, high in re.findall(r"\b(\d+(?:\.\d+)?)\.\.(\d+(?:\.\d+)?)\b", cells[-1]):
            ranges.append((page, var, low, high))
    return ranges


DOCUMENTED_RANGES = _documented_ranges()
# The lease outlasts a processor call: at its longest, the call's limit is a lease's too.
_BASE = {"scheduler_lease_s": MAX_LEASE_S}


def _starts_with(var: str, value: float) -> bool:
    try:
        check_settings(Settings(**{**_BASE, SETTINGS[var].name: value}))
    except InvalidSettings:
        return False
    return True


def test_the_documented_ranges_are_found() -> None:
    assert len(DOCUMENTED_RANGES) >= 15
    named = {var for _, var, _, _ in DOCUMENTED_RANGES}
    assert {"PAYORCH_SCHEDULER_BATCH_SIZE", "PAYORCH_GC_THRESHOLD"} <= named


@pytest.mark.parametrize(("page", "var", "low", "high"), DOCUMENTED_RANGES, ids=str)
def test_a_documented_range_is_the_one_a_process_starts_with(
    page: str, var: str, low: str, high: str
) -> None:
    """Both ends start; just past either is refused at start."""
    whole = SETTINGS[var].type in ("int", int)
    kind = int if whole else float
    step = 1 if whole else 1e-6
    assert _starts_with(var, kind(low)), f"{page}: {var}={low} is refused"
    assert _starts_with(var, kind(high)), f"{page}: {var}={high} is refused"
    assert not _starts_with(var, kind(low) - step), f"{page}: {var} below {low} is taken"
    assert not _starts_with(var, kind(high) + step), f"{page}: {var} above {high} is taken"


def test_the_shortest_lease_is_the_documented_call_timeout_and_5_s() -> None:
    assert "at least PAYORCH_CALL_TIMEOUT_S + 5 (so 15 by default)" in DOCS
    for timeout in (10.0, 40.0):
        lease = {"call_timeout_s": timeout}
        check_settings(Settings(**lease, scheduler_lease_s=timeout + 5))
        with pytest.raises(InvalidSettings, match="PAYORCH_SCHEDULER_LEASE_S"):
            check_settings(Settings(**lease, scheduler_lease_s=timeout + 4.9))


def test_a_call_timeout_no_capture_fits_in_a_run_with_is_refused_at_start() -> None:
    """Past 50 s a capture (two tries, each looked up) no longer fits in RUN_LIMIT_S:
    every one would be owed, silently left to the reconciler. Refused instead."""
    assert longest_settle_s(MAX_CALL_TIMEOUT_S) == RUN_LIMIT_S
    check_settings(Settings(**_BASE, call_timeout_s=MAX_CALL_TIMEOUT_S))
    with pytest.raises(InvalidSettings) as refused:
        check_settings(Settings(**_BASE, call_timeout_s=MAX_CALL_TIMEOUT_S + 0.001))
    message = str(refused.value)
    assert message.startswith("PAYORCH_CALL_TIMEOUT_S must be 0.001..50 seconds")
    assert "120 s" in message and "50.001" in message


def _error_reasons() -> set[str]:
    """ErrorInfo reasons: the third argument of every `error(code, message, reason)`."""
    reasons = set()
    for path in (ROOT / "src" / "payorch" / "entrypoints" / "grpc").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            reason = node.args[2] if name == "error" and len(node.args) > 2 else None
            if isinstance(reason, ast.Constant) and isinstance(reason.value, str):
                reasons.add(reason.value)
    return reasons


def test_every_error_reason_is_documented() -> None:
    reasons = _error_reasons()
    assert {"IDEMPOTENCY_KEY_REUSED", "DEADLINE_TOO_SHORT", "STORAGE_UNAVAILABLE"} <= reasons
    assert sorted(r for r in reasons if not re.search(rf"\b{r}\b", DOCS)) == []


def test_every_webhook_type_is_documented_and_every_documented_one_exists() -> None:
    assert sorted(t for t in EVENT_TYPES if f"`{t}`" not in DOCS) == []
    named = set(re.findall(r"`((?:installment|installment_plan|payment)\.[a-z_.]*[a-z])`", DOCS))
    # Trace span names (docs/observability.md, Traces), not webhook types.
    spans = {"payment.plan", "payment.step"}
    assert sorted(named - EVENT_TYPES - spans) == []


def _domain_events() -> dict[str, type[DomainEvent]]:
    """Every event class the domain defines, by name: each is stored in the outbox and
    goes out as a webhook to every endpoint that takes all types."""
    for module in pkgutil.iter_modules(payorch.domain.__path__, "payorch.domain."):
        importlib.import_module(module.name)
    found: dict[str, type[DomainEvent]] = {}
    stack: list[type[DomainEvent]] = [DomainEvent]
    while stack:
        for cls in stack.pop().__subclasses__():
            found[cls.__name__] = cls
            stack.append(cls)
    return found


def _sent_data(name: str, cls: type[DomainEvent]) -> dict[str, object]:
    """The `data` of the event's webhook, built as the fan-out builds it: a payment's
    events get their payment's currency, a plan's carry their own."""
    payload = {f.name: f"<{f.name}>" for f in fields(cls) if f.name != "sequence"}
    body = webhook_body(
        event_id="evt_1",
        name=name,
        aggregate_id="pay_1",
        merchant_id="m_1",
        sequence=1,
        occurred_at=datetime(2027, 1, 5, tzinfo=UTC),
        payload=payload,
        currency="" if "plan_id" in payload else "EUR",
    )
    return dict(json.loads(body)["data"])


def _webhook_shapes() -> tuple[dict[str, set[str]], set[str]]:
    """docs/installments.md, What each webhook carries: each type's fields, and the
    fields the glossary table describes."""
    text = (ROOT / "docs" / "installments.md").read_text(encoding="utf-8")
    assert "### What each webhook carries" in text
    section = text.split("### What each webhook carries", 1)[1].split("\n### ", 1)[0]
    by_type, described = {}, set()
    for cells in re.findall(r"^\| (`[^|]*`) \| ([^|]*) \|", section, re.M):
        names = re.findall(r"`([a-z_.]+)`", cells[0])
        if cells[1] in ("string", "integer", "boolean"):
            described.update(names)
        elif len(names) == 1 and names[0] in EVENT_TYPES:
            by_type[names[0]] = set(re.findall(r"`([a-z_]+)`", cells[1]))
    return by_type, described


def test_every_event_the_domain_defines_is_a_webhook_type_one_may_subscribe_to() -> None:
    assert sorted(_domain_events()) == sorted(EVENT_NAMES)


def test_every_webhook_types_data_is_documented_field_by_field() -> None:
    by_type, described = _webhook_shapes()
    common = {"event_id", "sequence", "merchant_id"}
    sent = {event_type(n): set(_sent_data(n, c)) for n, c in _domain_events().items()}
    assert sorted(sent) == sorted(by_type), "a row for every type, none for a type not sent"
    for kind, keys in sent.items():
        assert sorted(by_type[kind] | common) == sorted(keys), kind
    assert sorted(set().union(*sent.values()) - described) == []


def test_every_webhook_amount_comes_with_its_currency() -> None:
    for name, cls in _domain_events().items():
        data = _sent_data(name, cls)
        if any(k.endswith("_minor") for k in data):
            assert data.get("currency"), name


def _metrics() -> set[str]:
    """Exposed names: a counter's with `_total`."""
    registry = CollectorRegistry()
    Metrics(registry)
    PaymentMetrics(registry)
    return {m.name + ("_total" if m.type == "counter" else "") for m in registry.collect()}


def test_every_metric_is_documented_and_every_documented_one_exists() -> None:
    metrics = _metrics()
    assert len(metrics) >= 20
    assert sorted(m for m in metrics if not re.search(rf"\b{m}\b", DOCS)) == []
    named = set(re.findall(r"\bpayorch_[a-z0-9_]+_(?:total|seconds|state|available)\b", DOCS))
    assert sorted(named - metrics) == []


def test_every_rpc_is_documented() -> None:
    methods = {m.name for s in SERVICES for m in s.methods}
    assert len(methods) >= 25
    assert sorted(m for m in methods if not re.search(rf"\b{m}\b", DOCS)) == []


def test_the_bulk_redelivery_bounds_are_the_documented_ones() -> None:
    from payorch.app.webhook_delivery import MAX_REDELIVERY_WINDOW, REDELIVERY_BATCH

    text = (ROOT / "docs" / "installments.md").read_text(encoding="utf-8")
    section = text.split("### Recovering after a receiver's outage")[1].split("\n### ")[0]
    assert f"at most {MAX_REDELIVERY_WINDOW.days} days" in section
    assert f"{REDELIVERY_BATCH} to a transaction" in section
