"""The sliding log of ``ratelimit`` kept in Redis, so every gateway replica shares one budget.

Each bucket is a sorted set (request id scored by admission time) and a hash (request id to
reserved tokens). Admission is one Lua script, so check-and-add is atomic across replicas,
and it reads Redis's own clock, so replicas with skewed clocks still agree on the window.
Tests may pass a ``clock`` instead, to move time by hand; the server never does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import redis.asyncio as redis

from fimgate.gateway.limits import Limits
from fimgate.gateway.ratelimit import WINDOW_SECONDS, Decision

# KEYS: log (zset of request ids by time), tokens (hash id -> reserved tokens), used (the
# hash's running total).  ARGV: rpm, tpm, request id, tokens, window seconds, peek (1: only
# report the window, admit nothing), and optionally now (seconds; else Redis's own TIME).
# Returns: allowed (0/1), requests in window, tokens in window, reset s, retry s, exceeded.
# An admission is O(log n) plus the expired entries; only a refusal walks the whole log.
_ADMIT = """
local log, amounts, total = KEYS[1], KEYS[2], KEYS[3]
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local id, tokens, window = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local peek = ARGV[6] == '1'
local now = tonumber(ARGV[7])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local used = tonumber(redis.call('GET', total) or '0')
local expired = redis.call('ZRANGEBYSCORE', log, '-inf', now - window)
for _, gone in ipairs(expired) do
  used = used - tonumber(redis.call('HGET', amounts, gone) or '0')
  redis.call('HDEL', amounts, gone)
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window) end
local n = redis.call('ZCARD', log)
local allowed, wait, exceeded = 1, 0, ''
if peek then
  allowed = 1
elseif n >= rpm or used + tokens > tpm then
  allowed = 0
  local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
  local wait_requests, wait_tokens = -1, -1
  if n >= rpm then wait_requests = tonumber(entries[2 * (n - rpm) + 2]) + window - now end
  if used + tokens > tpm then
    wait_tokens = 1e18
    local left = used
    for i = 1, n do
      left = left - tonumber(redis.call('HGET', amounts, entries[2 * i - 1]) or '0')
      if left + tokens <= tpm then
        wait_tokens = tonumber(entries[2 * i]) + window - now
        break
      end
    end
  end
  if wait_requests >= wait_tokens then
    wait, exceeded = wait_requests, 'requests'
  else
    wait, exceeded = wait_tokens, 'tokens'
  end
else
  redis.call('ZADD', log, now, id)
  redis.call('HSET', amounts, id, tokens)
  n = n + 1
  used = used + tokens
end
redis.call('SET', total, used)
local ttl = math.ceil(window * 1000) + 1000
redis.call('PEXPIRE', log, ttl)
redis.call('PEXPIRE', amounts, ttl)
redis.call('PEXPIRE', total, ttl)
local reset = 0
if n > 0 then
  local newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  reset = tonumber(newest[2]) + window - now
end
return {allowed, n, used, tostring(reset), tostring(wait), exceeded}
"""

# KEYS: tokens, used.  ARGV: request id, tokens used.
_SETTLE = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('INCRBY', KEYS[2], tonumber(ARGV[2]) - tonumber(held))
end
return 0
"""


class RedisRateLimiter:
    def __init__(
        self,
        url: str,
        window: float = WINDOW_SECONDS,
        prefix: str = "fimgate",
        clock: Callable[[], float] | None = None,
        timeout: float = 5.0,
    ) -> None:
        """``timeout``: each call's bound, connecting and answering (a frozen Redis holds a
        connection open and silent). ``clock``: for tests only, a time the script takes
        instead of Redis's own (which every replica shares, whatever its own clock says)."""
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._window = window
        self._clock = clock
        self._prefix = prefix
        self._admit = self._redis.register_script(_ADMIT)
        self._settle = self._redis.register_script(_SETTLE)

    def _keys(self, bucket: str) -> list[str]:
        # The {hash tag} keeps both keys of a bucket on one Redis Cluster node.
        base = f"{self._prefix}:ratelimit:{{{bucket}}}"
        return [f"{base}:log", f"{base}:tokens", f"{base}:used"]

    async def admit(self, bucket: str, limits: Limits, request_id: str, tokens: int) -> Decision:
        return await self._run(bucket, limits, request_id, tokens, peek=False)

    async def peek(self, bucket: str, limits: Limits) -> Decision:
        return await self._run(bucket, limits, "", 0, peek=True)

    async def _run(
        self, bucket: str, limits: Limits, request_id: str, tokens: int, *, peek: bool
    ) -> Decision:
        args = [limits.rpm, limits.tpm, request_id, tokens, self._window, int(peek)]
        if self._clock is not None:
            args.append(self._clock())  # a float goes as its repr: read back exactly
        allowed, count, used, reset, wait, exceeded = await self._admit(
            keys=self._keys(bucket), args=args
        )
        reason: Literal["requests", "tokens"] | None = exceeded.decode() or None  # type: ignore[assignment]
        return Decision(
            allowed=bool(allowed),
            limits=limits,
            remaining_requests=max(0, limits.rpm - int(count)),
            remaining_tokens=max(0, limits.tpm - int(used)),
            reset_requests=float(reset),
            reset_tokens=float(reset),
            retry_after=float(wait),
            exceeded=reason,
        )

    async def settle(self, bucket: str, request_id: str, tokens: int) -> None:
        await self._settle(keys=self._keys(bucket)[1:], args=[request_id, tokens])

    async def ping(self) -> None:
        await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()
