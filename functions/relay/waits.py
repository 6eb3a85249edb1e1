"""The one reading of a server's "wait this long": the Retry-After header, for the function's backends and the
steps' destinations alike.

Seconds (a decimal number) or an HTTP date (one without a zone is UTC); a time already past is 0. What is no finite
number of seconds ("inf", "nan", words) is None, as an absent header: the caller waits its own default, never
forever and never not at all. Each caller caps the result at its own longest wait.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def seconds(text: str) -> float | None:
    """A number of seconds at or above 0; None when the text is no finite number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delay seconds or an HTTP date); None when absent or unreadable."""
    text = (value or "").strip()
    if not text:
        return None
    delay = seconds(text)
    if delay is not None:
        return delay
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() - now.timestamp())
