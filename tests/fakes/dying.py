"""A server dying in the middle of a payment, as tests stage it."""

from __future__ import annotations


class ServerDied(BaseException):
    """Raised where a test's server dies (from a processor's call, say). A BaseException,
    as the process ending is: not an Exception an adapter raised, which the router turns
    into an answer whose outcome is unknown (payorch.app.processor_errors)."""
