"""When an HTTP call to a teacher is worth repeating, and how long to wait before it."""

from __future__ import annotations

import random

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def retry_delay(attempt: int, retry_after: str | None, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): Retry-After when given, else full-jitter backoff."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), cap)
        except ValueError:
            pass  # an HTTP date: fall back to our own backoff
    ceiling = min(cap, base * (2**attempt))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
