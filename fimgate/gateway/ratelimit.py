"""Requests and tokens per minute, as an exact sliding log.

Every admitted request is logged with its time and its token reservation; a request is
admitted when fewer than ``rpm`` requests, and at most ``tpm - reservation`` tokens, fall in
the last 60 seconds. A sliding log has no window edge, so no double burst; it costs one entry
per admitted request in the window (at most ``rpm``). ``settle`` replaces a reservation with
the tokens really used once the request ends, so a budget is charged for what was generated.

Two backends share this interface: ``MemoryRateLimiter`` (one process) and
``RedisRateLimiter`` (``ratelimit_redis``: every replica shares one budget exactly).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from fimgate.gateway.limits import Limits

WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limits: Limits
    remaining_requests: int
    remaining_tokens: int
    reset_requests: float  # seconds until no request is left in the window
    reset_tokens: float  # seconds until no token is left in the window
    retry_after: float = 0.0  # seconds until this request would fit (0 when admitted)
    exceeded: Literal["requests", "tokens"] | None = None

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after))


class RateLimiter(Protocol):
    async def admit(self, bucket: str, limits: Limits, request_id: str, tokens: int) -> Decision:
        """Admit one request reserving ``tokens``, or refuse it; never waits."""
        ...

    async def peek(self, bucket: str, limits: Limits) -> Decision:
        """The window as it stands, admitting nothing (for the headers of a request that
        never reached admission)."""
        ...

    async def settle(self, bucket: str, request_id: str, tokens: int) -> None:
        """Replace an admitted request's reservation with the tokens it really used."""
        ...

    async def ping(self) -> None:
        """Raise if the limiter's store cannot be reached (readiness)."""
        ...

    async def aclose(self) -> None: ...


@dataclass
class _Entry:
    at: float
    request_id: str
    tokens: int


@dataclass
class _Log:
    entries: deque[_Entry] = field(default_factory=deque)
    by_id: dict[str, _Entry] = field(default_factory=dict)
    tokens: int = 0

    def prune(self, now: float, window: float) -> None:
        while self.entries and self.entries[0].at <= now - window:
            gone = self.entries.popleft()
            self.tokens -= gone.tokens
            del self.by_id[gone.request_id]


def wait_for_room(
    entries: list[tuple[float, int]], limits: Limits, tokens: int, now: float, window: float
) -> tuple[float, Literal["requests", "tokens"] | None]:
    """Seconds until a request reserving ``tokens`` fits, given the window's (time, tokens)
    entries oldest first; and which limit is in the way (None if it fits now)."""
    in_use = sum(t for _, t in entries)
    waits: dict[Literal["requests", "tokens"], float] = {}
    if len(entries) >= limits.rpm:
        waits["requests"] = entries[len(entries) - limits.rpm][0] + window - now
    if in_use + tokens > limits.tpm:
        waits["tokens"] = math.inf  # the caller keeps reservations within tpm, so it ends
        for at, used in entries:
            in_use -= used
            if in_use + tokens <= limits.tpm:
                waits["tokens"] = at + window - now
                break
    if not waits:
        return 0.0, None
    exceeded = max(waits, key=waits.__getitem__)
    return waits[exceeded], exceeded


class MemoryRateLimiter:
    """The in-process sliding log. Runs on the event loop only, so it needs no lock."""

    def __init__(
        self, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window = window
        self._clock = clock
        self._logs: dict[str, _Log] = {}

    async def admit(self, bucket: str, limits: Limits, request_id: str, tokens: int) -> Decision:
        now = self._clock()
        log = self._logs.setdefault(bucket, _Log())
        log.prune(now, self._window)
        wait, exceeded = 0.0, None
        if len(log.entries) >= limits.rpm or log.tokens + tokens > limits.tpm:
            # Refused: only now walk the log to find when room frees (O(entries)).
            wait, exceeded = wait_for_room(
                [(e.at, e.tokens) for e in log.entries], limits, tokens, now, self._window
            )
        if exceeded is None:
            entry = _Entry(now, request_id, tokens)
            log.entries.append(entry)
            log.by_id[request_id] = entry
            log.tokens += tokens
        return self._decision(bucket, limits, exceeded is None, wait, exceeded)

    async def peek(self, bucket: str, limits: Limits) -> Decision:
        return self._decision(bucket, limits, allowed=True)

    def _decision(
        self,
        bucket: str,
        limits: Limits,
        allowed: bool,
        wait: float = 0.0,
        exceeded: Literal["requests", "tokens"] | None = None,
    ) -> Decision:
        now = self._clock()
        log = self._logs.setdefault(bucket, _Log())
        log.prune(now, self._window)
        reset = log.entries[-1].at + self._window - now if log.entries else 0.0
        return Decision(
            allowed=allowed,
            limits=limits,
            remaining_requests=max(0, limits.rpm - len(log.entries)),
            remaining_tokens=max(0, limits.tpm - log.tokens),
            reset_requests=reset,
            reset_tokens=reset,
            retry_after=wait,
            exceeded=exceeded,
        )

    async def settle(self, bucket: str, request_id: str, tokens: int) -> None:
        log = self._logs.get(bucket)
        entry = log.by_id.get(request_id) if log else None
        if log is not None and entry is not None:  # else it has left the window already
            log.tokens += tokens - entry.tokens
            entry.tokens = tokens

    async def ping(self) -> None:
        return None  # in this process: always there

    async def aclose(self) -> None:
        self._logs.clear()
