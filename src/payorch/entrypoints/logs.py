"""Structured JSON logs: one line per record, CR/LF stripped, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from payorch.domain.card_data import redact_card_numbers
from payorch.domain.contracts import redact_secrets
from payorch.domain.json_text import encoder
from payorch.settings import InvalidSettings

_CRLF_RE = re.compile(r"[\r\n]+")
# Extra fields a record may carry (logger.info("...", extra={"payment_id": ...})).
CONTEXT_FIELDS = ("request_id", "payment_id", "merchant_id", "rpc", "code", "processor")
# json.dumps(out, ensure_ascii=False), its encoder built once.
_ENCODE = encoder(ensure_ascii=False)
_ABSENT = object()


def scrub(value: object) -> str:
    """Make a value safe to log: no line breaks, no secrets, no card numbers."""
    text = str(value)
    if "\r" in text or "\n" in text:  # each line record's fields pass here: skip the scan
        text = _CRLF_RE.sub(" ", text)
    text = redact_secrets(text)
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
            value = getattr(record, name, _ABSENT)
            if value is not _ABSENT:
                out[name] = scrub(value)
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return _ENCODE(out)


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    """JSON lines to `stream` (stderr) from every logger."""
    if level.upper() not in LEVELS:
        raise InvalidSettings(
            f"PAYORCH_LOG_LEVEL must be one of {', '.join(LEVELS)}, not {level[:40]!r}"
        )
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Records need not look up thread and process names: no line carries them
    # (the logging HOWTO's "Optimization"; a log line per payment is hot).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # aiosqlite traces every statement with its parameters at DEBUG: stored secrets
    # (webhook signing keys) would reach the log.
    for noisy in ("aiohttp.access", "sqlalchemy.engine", "stripe", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A migrating start: Alembic says at INFO which plugins it set up and each
    # migration it runs (some 30 lines), where payorch says it migrated in one. Its
    # lines are there for DEBUG.
    logging.getLogger("alembic").setLevel(
        logging.NOTSET if level.upper() == "DEBUG" else logging.WARNING
    )
