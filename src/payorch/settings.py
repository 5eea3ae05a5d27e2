"""Settings from PAYORCH_* environment variables; `payorch serve` flags win over them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class InvalidSettings(ValueError):
    """A setting the server cannot start with; the message names the variable."""


def _read_secret(var: str, value: str, file: str) -> str:
    """A secret from its variable, or from the file named by its *_FILE variable."""
    if value:
        return value
    if file:
        try:
            return Path(file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not text"
            raise InvalidSettings(f"{var}_FILE: cannot read {file!r}: {reason}") from None
    return ""


# Read from PAYORCH_<NAME> or from the file named by PAYORCH_<NAME>_FILE; never printed.
SECRETS = ("stripe_api_key", "stripe_webhook_secret", "metrics_token", "secrets_key")


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    database_url: str = "sqlite:///payorch.db"
    http_port: int = 9464
    http_host: str = "127.0.0.1"
    # When set, GET /metrics needs `Authorization: Bearer <token>` (Prometheus's
    # `authorization.credentials_file`); /healthz, /readyz and Stripe's webhooks do not.
    metrics_token: str = field(default="", repr=False)
    # Simulated processors, comma separated, each with its own faults:
    # "simulated" or "sim_a,sim_b"; faults via simulate / simulate_<name>.
    processors: str = "simulated"
    simulate: str = ""
    simulate_by_processor: dict[str, str] = field(default_factory=dict)
    stripe_api_key: str = field(default="", repr=False)
    stripe_api_base: str = ""
    stripe_webhook_secret: str = field(default="", repr=False)
    stripe_allow_live: bool = False
    # Keys sealing the secrets payorch stores (webhook signing keys), docs/security.md:
    # `ID:BASE64` (or a bare BASE64 of 32 bytes), several separated by commas or lines,
    # the first sealing, every one opening. Empty: on a SQLite file, a key file beside
    # it (made at the first start); on PostgreSQL, refused at start.
    secrets_key: str = field(default="", repr=False)
    call_timeout_s: float = 10.0
    grace_period_s: float = 10.0
    # On SIGTERM/SIGINT: health NOT_SERVING and /readyz 503 this long while calls are
    # still taken, so load balancers polling health stop routing here before it closes.
    shutdown_drain_s: float = 0.0
    # Readiness follows the database (docs/observability.md, Readiness): a SELECT 1
    # this often, each given this long; two failed in a row make the replica not ready.
    database_probe_interval_s: float = 2.0
    database_probe_timeout_s: float = 2.0
    # A database that answers nothing (a host or network dropping packets, a server
    # hung) holds no call longer than this per step: a connect, a pooled connection's
    # checkout, one statement (docs/recovery.md, When the database goes away).
    database_timeout_s: float = 30.0
    auth_cache_s: float = 5.0
    # Merchant configs are read from memory this long; other replicas see a change after it.
    config_cache_s: float = 5.0
    demo_key_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    # PEM CRL(s) of the client CA: a client certificate listed is refused on every call.
    tls_client_crl_file: str = ""
    reconcile_interval_s: float = 60.0
    max_message_bytes: int = 1 << 20
    # A gRPC connection with no call open this long is closed (the client reconnects
    # on its next call): idle ones otherwise hold a file descriptor each for good.
    max_connection_idle_s: float = 300.0
    # Calls open at once on the whole server (every connection, health and reflection
    # included); more are refused RESOURCE_EXHAUSTED before any handler runs.
    max_concurrent_rpcs: int = 2000
    log_level: str = "INFO"
    # The serve loop: "uvloop" (when installed) or "asyncio".
    event_loop: str = "uvloop"
    # The garbage collector's first-generation threshold while serving (0: Python's 700).
    gc_threshold: int = 20_000
    # Processor health, per replica (docs/health.md): sliding window, thresholds,
    # breaker and retry budget; PAYORCH_HEALTH_<NAME>.
    health_window_s: int = 60
    health_min_requests: int = 20
    health_degraded_failure_rate: float = 0.10
    health_unhealthy_failure_rate: float = 0.50
    health_degraded_p95_ms: float = 2_000.0
    health_unhealthy_p95_ms: float = 8_000.0
    health_cooldown_s: float = 30.0
    health_half_open_probes: int = 3
    health_retry_budget_ratio: float = 0.10
    health_retry_budget_min: int = 10
    health_degraded_trial_every: int = 10
    # Installments and outbound webhooks (docs/installments.md). The scheduler and the
    # dispatcher run inside `payorch serve` only when switched on; `payorch scheduler`
    # runs them on their own. PAYORCH_CLOCK_OFFSET ("30d", seconds) shifts the clock.
    scheduler: bool = False
    scheduler_interval_s: float = 60.0
    scheduler_batch_size: int = 50
    scheduler_lease_s: float = 120.0
    scheduler_concurrency: int = 100
    clock_offset: str = ""
    webhook_dispatcher: bool = False
    webhook_interval_s: float = 2.0
    webhook_timeout_s: float = 10.0
    # An endpoint whose every attempt failed this long (and 3 deliveries dead-lettered
    # meanwhile) is disabled: 1-30 days, default 3.
    webhook_disable_after_s: float = 259_200.0
    # Development only: http:// to 127.0.0.1, [::1] or localhost (tests, local receivers).
    webhooks_allow_http_loopback: bool = False
    # Simulated processors append one line per charge here (shared counting mode).
    sim_charge_log: str = ""
    # Observability (docs/observability.md): the ContractMonitor's latency SLO; traces
    # (console | otlp, off when empty); where the biweekly retrospective is written
    # (off when empty); how many violations wait in memory for their write.
    latency_slo_ms: float = 2000.0
    otel_exporter: str = ""
    otel_endpoint: str = ""
    retrospective_dir: str = ""
    violation_buffer: int = 10_000

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"PAYORCH_{f.name.upper()}")
            if raw is None or f.name in SECRETS or f.name == "simulate_by_processor":
                continue
            values[f.name] = _convert(f"PAYORCH_{f.name.upper()}", f.type, raw)
        for name in SECRETS:
            var = f"PAYORCH_{name.upper()}"
            values[name] = _read_secret(var, env.get(var, ""), env.get(f"{var}_FILE", ""))
        values["simulate_by_processor"] = {
            k[len("PAYORCH_SIMULATE_") :].lower(): v
            for k, v in env.items()
            if k.startswith("PAYORCH_SIMULATE_")
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def processor_names(self) -> list[str]:
        return [p.strip() for p in self.processors.split(",") if p.strip()]


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def _convert(var: str, kind: Any, raw: str) -> Any:
    """`raw` as the field's type; InvalidSettings naming `var` when it is not one."""
    text = raw.strip()
    try:
        if kind in ("int", int):
            return int(text)
        if kind in ("float", float):
            return float(text)
    except ValueError:
        what = "a whole number" if kind in ("int", int) else "a number"
        raise InvalidSettings(f"{var} must be {what}, not {raw[:40]!r}") from None
    if kind in ("bool", bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise InvalidSettings(
            f"{var} must be 1, true, yes or on (or 0, false, no, off), not {raw[:40]!r}"
        )
    return raw
