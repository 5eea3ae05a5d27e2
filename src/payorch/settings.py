"""Settings from PAYORCH_* environment variables; `payorch serve` flags win over them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


def _read_secret(value: str, file: str) -> str:
    """A secret from its variable, or from the file named by its *_FILE variable."""
    if value:
        return value
    if file:
        return Path(file).read_text().strip()
    return ""


# Read from PAYORCH_<NAME> or from the file named by PAYORCH_<NAME>_FILE; never printed.
SECRETS = ("stripe_api_key", "stripe_webhook_secret")


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    database_url: str = "sqlite:///payorch.db"
    http_port: int = 9464
    http_host: str = "127.0.0.1"
    # Simulated processors, comma separated, each with its own faults:
    # "simulated" or "sim_a,sim_b"; faults via simulate / simulate_<name>.
    processors: str = "simulated"
    simulate: str = ""
    simulate_by_processor: dict[str, str] = field(default_factory=dict)
    stripe_api_key: str = field(default="", repr=False)
    stripe_api_base: str = ""
    stripe_webhook_secret: str = field(default="", repr=False)
    stripe_allow_live: bool = False
    call_timeout_s: float = 10.0
    grace_period_s: float = 10.0
    auth_cache_s: float = 5.0
    # Merchant configs are read from memory this long; other replicas see a change after it.
    config_cache_s: float = 5.0
    demo_key_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    reconcile_interval_s: float = 60.0
    max_message_bytes: int = 1 << 20
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"PAYORCH_{f.name.upper()}")
            if raw is None or f.name in SECRETS or f.name == "simulate_by_processor":
                continue
            values[f.name] = _convert(f.type, raw)
        for name in SECRETS:
            var = f"PAYORCH_{name.upper()}"
            values[name] = _read_secret(env.get(var, ""), env.get(f"{var}_FILE", ""))
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


def _convert(kind: Any, raw: str) -> Any:
    if kind in ("int", int):
        return int(raw)
    if kind in ("float", float):
        return float(raw)
    if kind in ("bool", bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return raw
