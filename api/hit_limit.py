"""A per-token rate limit for our tracking URLs: at most N recorded hits per token per minute,
in this process. A hit over the limit is still answered (the image, the redirect) and counted
in `drip_tracking_hits_limited_total`, but not stored: a script fetching one pixel or link in a
loop can grow neither the events table nor anything downstream without bound."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class HitLimiter:
    def __init__(self, per_minute: int, max_tokens: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_tokens = max_tokens  # the least recently hit are forgotten beyond this
        self._windows: OrderedDict[str, tuple[int, int]] = OrderedDict()  # token: (minute, n)
        self._lock = threading.Lock()

    def allow(self, token: str, now: float | None = None) -> bool:
        minute = int((time.time() if now is None else now) // 60)
        with self._lock:
            start, count = self._windows.pop(token, (minute, 0))
            if start != minute:
                start, count = minute, 0
            self._windows[token] = (start, count + 1)
            while len(self._windows) > self.max_tokens:
                self._windows.popitem(last=False)
            return count < self.per_minute
