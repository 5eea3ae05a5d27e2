"""How a background job's failures are logged (the scheduler, the webhook dispatcher,
the reconciler): a failed pass, or one item of a pass; a fault with its traceback, an
outage of the database in one line."""

from __future__ import annotations

import logging
from collections.abc import Callable


def log_failure(
    log: logging.Logger,
    what: str,
    exc: BaseException,
    storage_unreachable: Callable[[BaseException], bool],
    then: str = "",
) -> None:
    """`what` (`scheduler pass`, `charging installment i_2`) raised `exc`; `then` says
    what follows. The database not reached is an outage, not a fault: everything that
    needs it fails the same way while it lasts, so each failure is one warning line
    naming the exception's type, with no traceback (nor the driver's text, which may
    name the database). Anything else is logged with its traceback."""
    if not storage_unreachable(exc):
        log.error("%s failed%s", what, then, exc_info=exc)
        return
    log.warning("%s: the database cannot be reached (%s)%s", what, type(exc).__name__, then)


def log_failed_pass(
    log: logging.Logger,
    job: str,
    exc: BaseException,
    interval_s: float,
    storage_unreachable: Callable[[BaseException], bool],
) -> None:
    """The pass of `job` raised `exc`: logged as log_failure says, with when the next
    pass runs."""
    log_failure(log, f"{job} pass", exc, storage_unreachable, f"; next pass in {interval_s:.0f} s")
