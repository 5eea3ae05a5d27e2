"""When to try a failed attempt again, and how long to wait first."""

from __future__ import annotations

from dataclasses import dataclass

from payorch.domain.results import Classification, Outcome

MAX_RETRIES_CAP = 3
MAX_DELAY_CAP_MS = 2_999
# Time kept back from the caller's deadline to store the result.
DEADLINE_RESERVE_MS = 50
# The least time a processor call is started with: less cannot be answered (a charge at
# Stripe is two round trips, create and confirm), and a call cut off by the deadline may
# charge all the same, its answer lost. With less left (beside DEADLINE_RESERVE_MS),
# nothing is sent: no first call, no retry, no failover.
MIN_CALL_MS = 200


class InvalidRetryPolicy(ValueError):
    pass


def retry_policy_problems(
    max_retries: int, base_delay_ms: int, max_delay_ms: int
) -> list[tuple[str, str]]:
    """Each value out of range, as (field, what is wrong): all of them, not the first."""
    problems: list[tuple[str, str]] = []
    if not 0 <= max_retries <= MAX_RETRIES_CAP:
        problems.append(("max_retries", f"must be 0..{MAX_RETRIES_CAP}"))
    if not 0 <= max_delay_ms <= MAX_DELAY_CAP_MS:
        problems.append(("max_delay_ms", f"must be 0..{MAX_DELAY_CAP_MS}"))
    if base_delay_ms < 0:
        problems.append(("base_delay_ms", "cannot be negative"))
    elif base_delay_ms > max_delay_ms:
        problems.append(("base_delay_ms", f"must not exceed max_delay_ms ({max_delay_ms})"))
    return problems


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Defaults from the seed: one retry, under 3 s, with jitter."""

    max_retries: int = 1
    base_delay_ms: int = 400
    max_delay_ms: int = 2_500

    def __post_init__(self) -> None:
        problems = retry_policy_problems(self.max_retries, self.base_delay_ms, self.max_delay_ms)
        if problems:
            raise InvalidRetryPolicy("; ".join(f"{f} {m}" for f, m in problems))

    def delay_ms(self, retry_number: int, jitter: float) -> int:
        """Delay before retry `retry_number` (1-based): exponential, half-jittered.

        `jitter` is a draw from [0, 1); the delay lies in [d/2, d) for the capped
        exponential d, so concurrent payments spread out instead of retrying together.
        """
        exp: int = min(self.base_delay_ms << (retry_number - 1), self.max_delay_ms)
        # Floats just below 1 can round up to exp itself: keep strictly below.
        return max(0, min(int(exp / 2 + exp / 2 * jitter), exp - 1))


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    delay_ms: int
    reason: str


_DONE = RetryDecision(False, 0, "done")


def decide_retry(
    classification: Classification,
    *,
    attempt_number: int,
    policy: RetryPolicy,
    jitter: float,
    remaining_ms: float | None,
    expected_call_ms: float,
    retry_after_ms: float | None = None,
) -> RetryDecision:
    """Retry only "retry now" failures, within the policy and the caller's deadline:
    the time left must cover the delay, the call and the reserve to store the result."""
    if classification.outcome in (Outcome.SUCCESS, Outcome.REQUIRES_ACTION):
        return _DONE
    if not classification.retry_now:
        return RetryDecision(False, 0, f"not retryable now ({classification.error_code.value})")
    retry_number = attempt_number  # attempt 1 failed -> retry 1
    if retry_number > policy.max_retries:
        return RetryDecision(False, 0, f"retries exhausted ({policy.max_retries} allowed)")
    delay = policy.delay_ms(retry_number, jitter)
    if retry_after_ms is not None:
        delay = max(delay, int(retry_after_ms))
        if delay > MAX_DELAY_CAP_MS:
            return RetryDecision(False, 0, f"processor asked to wait {int(retry_after_ms)} ms")
    if remaining_ms is not None and delay + expected_call_ms + DEADLINE_RESERVE_MS > remaining_ms:
        return RetryDecision(
            False,
            0,
            f"deadline: {int(remaining_ms)} ms left, retry needs {delay} ms + call"
            f" + {DEADLINE_RESERVE_MS} ms to store the result",
        )
    return RetryDecision(True, delay, f"retry {retry_number} after {delay} ms")
