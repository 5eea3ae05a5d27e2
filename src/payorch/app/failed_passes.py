"""How a background job's failed pass is logged (the scheduler, the webhook dispatcher,
the reconciler): a fault with its traceback, an outage of the database in one line."""

from __future__ import annotations

import logging
from collections.abc import Callable


def log_failed_pass(
    log: logging.Logger,
    job: str,
    exc: BaseException,
    interval_s: float,
    storage_unreachable: Callable[[BaseException], bool],
) -> None:
    """The pass of `job` raised `exc`. The database not reached is an outage, not a
    fault: every pass fails the same way while it lasts, so each is one warning line
    naming the exception's type, with no traceback (nor the driver's text, which may
    name the database). Anything else is logged with its traceback."""
    if not storage_unreachable(exc):
        log.error("%s pass failed; next pass in %.0f s", job, interval_s, exc_info=exc)
        return
    log.warning(
        "%s pass: the database cannot be reached (%s); next pass in %.0f s",
        job,
        type(exc).__name__,
        interval_s,
    )
