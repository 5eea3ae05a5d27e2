"""docker-compose.yml, the Dockerfile and deploy/prometheus.yml hold together with the
code: the variables they set are settings, and Prometheus scrapes every payorch
process compose runs (each counts only what it did itself)."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

from payorch.app.router import RUN_LIMIT_S
from payorch.domain.retry import MAX_DELAY_CAP_MS, MAX_RETRIES_CAP
from payorch.settings import SECRETS, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = (ROOT / "docker-compose.yml").read_text()
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PROMETHEUS = (ROOT / "deploy" / "prometheus.yml").read_text()


def known_variables() -> set[str]:
    names = {f"PAYORCH_{f.name.upper()}" for f in fields(Settings)}
    names |= {f"PAYORCH_{s.upper()}_FILE" for s in SECRETS}
    return names


def services(compose: str = COMPOSE) -> dict[str, str]:
    """Each compose service's block of lines, by name."""
    body = compose.split("\nservices:\n", 1)[1].split("\nvolumes:", 1)[0]
    found = re.split(r"^  ([\w-]+):\n", body, flags=re.MULTILINE)[1:]
    return dict(zip(found[::2], found[1::2], strict=True))


def image_default_http_port() -> str:
    match = re.search(r"PAYORCH_HTTP_PORT=(\d+)", DOCKERFILE)
    assert match, "the image sets PAYORCH_HTTP_PORT"
    return match.group(1)


def test_every_variable_compose_and_the_image_name_is_a_setting():
    # Comments too: a commented-out line is one an operator switches on as written.
    named = set(re.findall(r"\bPAYORCH_[A-Z0-9_]+", COMPOSE + DOCKERFILE))
    assert named and named <= known_variables(), sorted(named - known_variables())


def payorch_processes() -> dict[str, str]:
    """The compose services running a long-lived payorch process, with the HTTP port
    it serves its metrics on ("" when none)."""
    out: dict[str, str] = {}
    for name, block in services().items():
        command = re.search(r"^    command: (\[.*\])$", block, re.MULTILINE)
        if not command:
            continue
        argv = json.loads(command.group(1))
        if argv[:2] == ["payorch", "serve"]:
            port = re.search(r'PAYORCH_HTTP_PORT: "(\d+)"', block)
            out[name] = port.group(1) if port else image_default_http_port()
        elif argv[:2] == ["payorch", "scheduler"] or argv[:3] == [
            "payorch",
            "webhooks",
            "dispatch",
        ]:
            out[name] = argv[argv.index("--http-port") + 1] if "--http-port" in argv else ""
    return out


def test_prometheus_scrapes_every_payorch_process_compose_runs():
    processes = payorch_processes()
    assert {"payorch", "scheduler"} <= processes.keys()
    targets: set[str] = set()
    for listed in re.findall(r"targets: (\[.*\])", PROMETHEUS):
        targets |= set(json.loads(listed))
    # Before: the scheduler served no metrics, so its installment charges, processor
    # calls and webhook deliveries reached no dashboard.
    assert {f"{name}:{port}" for name, port in processes.items()} <= targets, (
        processes,
        targets,
    )


def test_every_payorch_service_compose_runs_has_a_healthcheck_on_its_http_port():
    for name, port in payorch_processes().items():
        check = re.search(
            r"healthcheck:\n(?:.*\n)*?.*http://127\.0\.0\.1:(\d+)/(\w+)", services()[name]
        )
        assert check and check.group(1) == port, name
        # Readiness, which follows the database in the scheduler too: not liveness,
        # which stays 200 while the process can do nothing.
        assert check.group(2) == "readyz", name


def seconds(duration: str) -> float:
    """A compose duration such as `1m30s` or `20s`, in seconds."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, duration
    return int(parts.group(1) or 0) * 60 + int(parts.group(2) or 0)


def longest_installment_charge_s(call_timeout_s: float) -> float:
    """An installment's charge has no caller's deadline: on one processor it makes up
    to MAX_RETRIES_CAP + 1 calls, each of which may answer an indeterminate 500 that a
    look-up (another call) follows, with a wait of up to MAX_DELAY_CAP_MS before each
    retry (docs/installments.md, The scheduler)."""
    calls = 2 * (MAX_RETRIES_CAP + 1)
    return calls * call_timeout_s + MAX_RETRIES_CAP * MAX_DELAY_CAP_MS / 1000


def test_the_scheduler_is_given_the_time_of_its_longest_charge_to_stop():
    block = services()["scheduler"]
    grace = re.search(r"^    stop_grace_period: (\S+)$", block, re.MULTILINE)
    assert grace, "the scheduler sets stop_grace_period"
    timeout = re.search(r'PAYORCH_CALL_TIMEOUT_S: "([\d.]+)"', block)
    call_timeout_s = float(timeout.group(1)) if timeout else Settings().call_timeout_s
    # Before: 30 s, while one charge may take 89 s (8 calls of 10 s, 3 waits of 3 s):
    # docker stop's SIGKILL cut it mid-call and its claim waited out its lease.
    assert seconds(grace.group(1)) >= longest_installment_charge_s(call_timeout_s)
    # Failing over to other processors, a charge may run to the run's limit (no call
    # starts past it, and each call ends by it), then store its result.
    assert seconds(grace.group(1)) >= RUN_LIMIT_S + 5


ALERTS = (ROOT / "deploy" / "alerts.yml").read_text()
# The labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"instance", "job"}


def exported_series() -> dict[str, set[str]]:
    """Every series name payorch's metrics export, with their labels (those the
    process's Metrics and PaymentMetrics declare), as /metrics serves them."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import MetricWrapperBase

    from payorch.adapters.metrics import Metrics
    from payorch.adapters.payment_metrics import PaymentMetrics

    registry = CollectorRegistry()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    series: dict[str, set[str]] = {"up": set()}
    for metrics in (Metrics(registry), PaymentMetrics(registry)):
        for metric in vars(metrics).values():
            if isinstance(metric, MetricWrapperBase):
                for suffix in suffixes[metric._type]:
                    labels = set(metric._labelnames) | ({"le"} if suffix == "_bucket" else set())
                    series[metric._name + suffix] = labels
    return series


def alert_rules() -> list[dict[str, str]]:
    """Each rule of deploy/alerts.yml as its alert name, expr, severity and summary: the
    file keeps to one line a value, so that this reads it without a YAML library."""
    blocks = re.split(r"^      - alert: ", ALERTS, flags=re.MULTILINE)[1:]
    rules = []
    for block in blocks:
        fields_ = {"alert": block.split("\n", 1)[0].strip()}
        for key in ("expr", "for", "severity", "summary"):
            found = re.search(rf"^\s+{key}: (.+)$", block, re.MULTILINE)
            if found:
                fields_[key] = found.group(1).strip()
        rules.append(fields_)
    return rules


def test_prometheus_loads_the_alerting_rules_compose_mounts():
    assert "rule_files:\n  - /etc/prometheus/alerts.yml\n" in PROMETHEUS
    prometheus = services()["prometheus"]
    assert "- ./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro" in prometheus


def test_every_alert_has_an_expression_a_severity_and_a_summary():
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)) >= 10, names
    for rule in rules:
        assert rule.keys() >= {"expr", "severity", "summary"}, rule
        assert rule["severity"] in {"info", "warning", "critical"}, rule
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule
        assert rule["expr"].count("{") == rule["expr"].count("}"), rule


def test_every_alert_reads_series_payorch_exports_with_labels_they_have():
    """An alert on a metric renamed or a label removed would never fire, silently."""
    from payorch.adapters.pass_metrics import CHARGE_OUTCOMES, DELIVERY_OUTCOMES
    from payorch.domain.payment import PaymentStatus
    from payorch.domain.request import Severity

    series = exported_series()
    values = {
        ("payorch_scheduler_charges_total", "outcome"): set(CHARGE_OUTCOMES),
        ("payorch_webhook_deliveries_total", "outcome"): set(DELIVERY_OUTCOMES),
        ("payorch_payments_total", "status"): {s.value for s in PaymentStatus},
        ("payorch_contract_violations_total", "severity"): {s.value for s in Severity},
        ("up", "job"): {"payorch"},
    }
    for rule in alert_rules():
        expr = rule["expr"]
        named = re.findall(r"\b([a-z_]+)(?:\{([^}]*)\})?\[", expr)
        named += re.findall(r"(?<![\w(])([a-z_]+)(?:\{([^}]*)\})? (?:==|>)", expr)
        assert named, rule
        for name, matchers in named:
            assert name in series, (rule["alert"], name)
            for label, op, value in re.findall(r'(\w+)(=~|!=|=)"([^"]*)"', matchers):
                assert label in series[name] | TARGET_LABELS, (rule["alert"], name, label)
                allowed = values.get((name, label))
                if allowed is not None:
                    wanted = value.split("|") if op == "=~" else [value]
                    assert set(wanted) <= allowed, (rule["alert"], name, label, value)
        by = re.findall(r"by \(([^)]*)\) \(\w+\(([a-z_]+)", expr)
        for labels, name in by:
            for label in (x.strip() for x in labels.split(",")):
                assert label in series[name] | TARGET_LABELS, (rule["alert"], name, label)


def uncommented(text: str) -> str:
    """The text with its comment markers taken off: the lines an operator switches on
    as written are read as if they were."""
    return re.sub(r"^(\s*)# ?", r"\1", text, flags=re.MULTILINE)


def test_the_metrics_token_prometheus_sends_is_the_one_every_scraped_process_reads():
    prometheus = uncommented(PROMETHEUS)
    sent = re.search(r"authorization:\n\s+type: Bearer\n\s+credentials_file: (\S+)", prometheus)
    assert sent, "deploy/prometheus.yml shows how to send the token"
    secret = sent.group(1).rsplit("/", 1)[1]
    assert sent.group(1) == f"/run/secrets/{secret}"
    compose = uncommented(COMPOSE)
    assert re.search(rf"^secrets:\n  {secret}:\n    file: \S+$", compose, re.MULTILINE)
    blocks = services(compose)
    for name in [*payorch_processes(), "prometheus"]:
        assert f"    secrets: [{secret}]" in blocks[name], name
    for name, port in payorch_processes().items():
        if port:
            assert f"PAYORCH_METRICS_TOKEN_FILE: {sent.group(1)}" in blocks[name], name


def test_compose_publishes_the_http_port_and_prometheus_on_the_hosts_loopback_only():
    # /metrics (and Prometheus's own UI, holding all of it) are not for the network.
    for name in [*payorch_processes(), "prometheus"]:
        published = re.findall(r'^      - "([^"]+)"$', services()[name], re.MULTILINE)
        for mapping in published:
            if mapping.rsplit(":", 1)[1] in ("9464", "9090"):
                assert mapping.startswith("127.0.0.1:"), (name, mapping)


def test_every_payorch_process_on_postgresql_has_the_key_the_key_service_makes():
    # payorch refuses to start on PostgreSQL without PAYORCH_SECRETS_KEY (or _FILE): a
    # service without it never came up; one with another key file could not open what
    # the other process sealed.
    maker = services()["secrets-key"]
    argv = json.loads(re.search(r"^    command: (\[.*\])$", maker, re.MULTILINE).group(1))
    assert argv[:3] == ["payorch", "secrets", "generate-key"]
    key_file = argv[argv.index("--file") + 1]
    (made_on,) = re.findall(r"- ([\w-]+):(\S+)$", maker, re.MULTILINE)
    assert key_file.startswith(made_on[1] + "/")
    for name in payorch_processes():
        block = services()[name]
        assert "postgresql://" in block, name
        assert f"PAYORCH_SECRETS_KEY_FILE: {key_file}" in block, name
        assert f"- {made_on[0]}:{made_on[1]}:ro" in block, name
        assert re.search(r"secrets-key:\n\s+condition: service_completed_successfully", block)
    # The volume starts out as the image's directory: owned by the image's user.
    assert f"-m 0700 {made_on[1]}" in DOCKERFILE
