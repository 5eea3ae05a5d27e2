"""A unit-of-work factory for a database that fails: each unit raises the next error
as it is entered, as the real one raises when its connection cannot be had."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NoReturn

# In the driver's text, as asyncpg and SQLAlchemy may put it: never to reach the log.
DATABASE_URL = "postgresql://payorch:hunter2@db:5432/payorch"


def unreachable(exc: BaseException) -> bool:
    """The outage check handed in by the composition root, for these errors."""
    return isinstance(exc, ConnectionError)


def outage_then_fault() -> tuple[BaseException, ...]:
    """The database not reached (its URL, password and all, in the text), then a fault."""
    return (
        ConnectionRefusedError(f"connect call failed: {DATABASE_URL}"),
        RuntimeError("a bug in the pass"),
    )


class FailingUnits:
    """Units of work raising `errors` in turn as they are entered; with the last one
    `stop` is set, so that a job's run_forever ends after that pass."""

    def __init__(self, stop: asyncio.Event, *errors: BaseException) -> None:
        self._stop = stop
        self._errors = list(errors)

    def __call__(self) -> FailingUnits:
        return self

    async def __aenter__(self) -> NoReturn:
        error = self._errors.pop(0)
        if not self._errors:
            self._stop.set()
        raise error

    async def __aexit__(self, *exc: Any) -> None:  # pragma: no cover - never entered
        return None


def pass_records(records: list[logging.LogRecord], logger: str) -> list[tuple[int, str, bool]]:
    """(level, message, whether a traceback goes with it) of each of `logger`'s records."""
    return [
        (r.levelno, r.getMessage(), r.exc_info is not None) for r in records if r.name == logger
    ]


def one_line_then_traceback(job: str) -> list[tuple[int, str, bool]]:
    """What run_forever(0, ...) of `job` logs for outage_then_fault()'s passes: the outage
    in one warning line naming the error's type, the fault with its traceback."""
    return [
        (
            logging.WARNING,
            f"{job} pass: the database cannot be reached (ConnectionRefusedError);"
            " next pass in 0 s",
            False,
        ),
        (logging.ERROR, f"{job} pass failed; next pass in 0 s", True),
    ]


def logged_as(what: str, error: BaseException) -> tuple[int, str, bool]:
    """What a failure of `what` in a pass logs when it raised one of outage_then_fault()'s
    errors: the outage in one warning line naming its type, the fault with its traceback."""
    if unreachable(error):
        return (
            logging.WARNING,
            f"{what}: the database cannot be reached ({type(error).__name__})",
            False,
        )
    return (logging.ERROR, f"{what} failed", True)
