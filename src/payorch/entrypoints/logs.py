"""Structured JSON logs: one line per record, CR/LF stripped, secrets redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from payorch.domain.card_data import redact_card_numbers

# `*` too: Stripe quotes a bad key masked ("sk_test_****_1234"), still a key's tail.
_SECRET_RE = re.compile(r"\b(sk|rk|whsec|po)_[A-Za-z0-9_\-*]{6,}")
_CRLF_RE = re.compile(r"[\r\n]+")
# Extra fields a record may carry (logger.info("...", extra={"payment_id": ...})).
CONTEXT_FIELDS = ("request_id", "payment_id", "merchant_id", "rpc", "code", "processor")


def scrub(value: object) -> str:
    """Make a value safe to log: no line breaks, no secrets, no card numbers."""
    text = _CRLF_RE.sub(" ", str(value))
    text = _SECRET_RE.sub(lambda m: f"{m.group(1)}_[redacted]", text)
    return redact_card_numbers(text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            if hasattr(record, name):
                out[name] = scrub(getattr(record, name))
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosqlite traces every statement with its parameters at DEBUG: stored secrets
    # (webhook signing keys) would reach the log.
    for noisy in ("aiohttp.access", "sqlalchemy.engine", "stripe", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
