"""Retries with tenacity: only RetriableError is retried, and a 429 pauses every request.

A Retry-After from the server replaces the exponential backoff for that wait, and a RateLimited
answer also pauses the shared limiter, because the server's limit covers every request, not only
the retry of the one it refused. What still fails after the last attempt becomes ApiUnavailable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
import tenacity

from archiver.errors import ApiUnavailable, RateLimited, RetriableError
from archiver.limiter import RateLimiter

# One logger for the whole client, as before it was split into modules.
log = structlog.get_logger("archiver.cradle")


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried. `sleep` is injected so tests never wait; by default
    the client waits on its stop event, so a shutdown cuts a retry wait short."""

    attempts: int = 8
    initial: float = 0.5
    maximum: float = 30.0
    sleep: Callable[[float], None] | None = None


def with_retries(
    call: Callable[[], Any],
    endpoint: str,
    policy: RetryPolicy,
    *,
    limiter: RateLimiter,
    sleep: Callable[[float], None],
) -> Any:
    backoff = tenacity.wait_exponential_jitter(multiplier=policy.initial, max=policy.maximum)

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        delay = backoff(state)
        if isinstance(exc, RetriableError) and exc.retry_after is not None:
            delay = exc.retry_after
        if isinstance(exc, RateLimited):
            # A 429 holds every request, not only the retry of this one.
            limiter.pause_for(delay)
        log.warning(
            "api.retry",
            endpoint=endpoint,
            attempt=state.attempt_number,
            reason=getattr(exc, "reason", type(exc).__name__),
            wait=round(delay, 3),
        )
        return delay

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(RetriableError),
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=wait,
        sleep=sleep,
        reraise=True,
    )
    try:
        return retrying(call)
    except RetriableError as exc:
        raise ApiUnavailable(
            f"{endpoint} failed {policy.attempts} times, last: {exc}", reason=exc.reason
        ) from exc
