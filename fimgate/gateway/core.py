"""The gateway's policies in one place: who is calling, may they, and what did it cost.

The HTTP layer calls, per FIM request: ``authenticate`` → ``open`` → ``admit`` (after the
prompt is tokenized) → ``close`` (once, whatever happened: answered, refused, cancelled).
``close`` settles the rate-limit reservation to the real token count and writes the ledger.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import anyio
from anyio.to_thread import run_sync
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from fimgate.gateway.acceptance import AcceptanceTracker, Verdict
from fimgate.gateway.keys import KeyStore, Principal
from fimgate.gateway.limits import LimitBook, Limits
from fimgate.gateway.ratelimit import Decision, RateLimiter
from fimgate.gateway.usage import UsageLedger
from fimgate.store.database import Database
from fimgate.store.tables import utcnow

log = logging.getLogger("fimgate.gateway")


class RateLimited(Exception):
    def __init__(self, decision: Decision, workspace: str, model: str) -> None:
        limit = decision.limits
        what = (
            f"{limit.rpm} requests per minute"
            if decision.exceeded == "requests"
            else f"{limit.tpm} tokens per minute"
        )
        super().__init__(
            f"rate limit reached for workspace {workspace!r} on model {model!r}: {what}; "
            f"retry in {decision.retry_after_seconds} s"
        )
        self.decision = decision


class GatewayUnavailable(Exception):
    """The database or Redis could not be reached: the request cannot be checked, so it is
    refused (503), never let through unchecked."""


class LedgerUnavailable(GatewayUnavailable):
    """A request's row could not be written: it is not answered (nothing goes unrecorded)."""


class NeverFits(Exception):
    """The prompt alone is over the tokens-per-minute limit: waiting can never help."""


@dataclass
class RequestUsage:
    """One request's account, filled in as it goes and closed exactly once."""

    principal: Principal
    request_id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    created_at: datetime = field(default_factory=utcnow)
    started: float = field(default_factory=time.monotonic)
    model: str | None = None
    decision: Decision | None = None
    admitted: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cancelled: bool = False
    closed: bool = False
    stream: bool = False
    client_request_id: str | None = None  # the client's x-request-id, when it sent one
    first_token_at: float | None = None  # monotonic, for time to first token
    ended_at: float = 0.0  # monotonic, set when closed
    judged: Verdict | None = None  # the key's previous completion, judged by this prompt

    @property
    def latency_ms(self) -> float:
        return ((self.ended_at or time.monotonic()) - self.started) * 1000

    @property
    def bucket(self) -> str:
        return f"{self.principal.workspace_id}:{self.model}"


class Gateway:
    def __init__(
        self,
        database: Database,
        limiter: RateLimiter,
        defaults: Limits,
        output_estimate: int,
    ) -> None:
        self.database = database
        self.keys = KeyStore(database)
        self.limits = LimitBook(database, defaults)
        self.limiter = limiter
        self.ledger = UsageLedger(database)
        self.acceptance = AcceptanceTracker()
        # Tokens reserved for the completion at admission (capped by max_tokens); the
        # reservation is settled to the real count when the request ends.
        self.output_estimate = output_estimate

    async def authenticate(self, key: str) -> Principal:
        try:
            return await run_sync(self.keys.authenticate, key)
        except (SQLAlchemyError, OSError) as exc:
            log.error("key check failed: %s", type(exc).__name__)
            raise GatewayUnavailable("the key store is unavailable; retry shortly") from None

    def open(self, principal: Principal) -> RequestUsage:
        return RequestUsage(principal)

    async def admit(
        self,
        usage: RequestUsage,
        model: str,
        prompt_tokens: int,
        max_new_tokens: int,
        aliases: tuple[str, ...] = (),
    ) -> Decision:
        """Reserve one request and prompt + expected output tokens, or raise RateLimited.
        ``model`` is the served name (the budget's), ``aliases`` the model's other names."""
        usage.model = model
        try:
            limits = await run_sync(
                self.limits.resolve, usage.principal.workspace_id, model, aliases
            )
        except (SQLAlchemyError, OSError) as exc:
            log.error("limit lookup failed: %s", type(exc).__name__)
            raise GatewayUnavailable("the limits store is unavailable; retry shortly") from None
        if prompt_tokens > limits.tpm:
            await self._peek(usage, limits)
            raise NeverFits(
                f"the prompt is {prompt_tokens} tokens, more than workspace "
                f"{usage.principal.workspace!r} may use on model {model!r} in a minute "
                f"({limits.tpm} tokens); send less context, or raise the limit with "
                f"`fimgate limits set --tpm`"
            )
        reserve = min(prompt_tokens + min(max_new_tokens, self.output_estimate), limits.tpm)
        try:
            decision = await self.limiter.admit(usage.bucket, limits, usage.request_id, reserve)
        except (RedisError, OSError) as exc:
            log.error("rate limiter failed: %s", type(exc).__name__)
            raise GatewayUnavailable("the rate limiter is unavailable; retry shortly") from None
        usage.decision = decision
        if not decision.allowed:
            raise RateLimited(decision, usage.principal.workspace, model)
        usage.admitted = True
        usage.prompt_tokens = prompt_tokens
        return decision

    async def observe(self, usage: RequestUsage, model: str, aliases: tuple[str, ...] = ()) -> None:
        """Record the window's state for a request refused before admission (a prompt over
        the context), so its response still carries the rate-limit headers."""
        usage.model = model
        try:
            limits = await run_sync(
                self.limits.resolve, usage.principal.workspace_id, model, aliases
            )
        except (SQLAlchemyError, OSError):
            return  # best effort: the request is being refused anyway
        await self._peek(usage, limits)

    async def _peek(self, usage: RequestUsage, limits: Limits) -> None:
        with contextlib.suppress(RedisError, OSError):
            usage.decision = await self.limiter.peek(usage.bucket, limits)

    async def close(self, usage: RequestUsage, status: int) -> None:
        """Settle and record the request; later calls do nothing. Shielded: a client that
        disconnects cancels the request's task, and its account must still be written."""
        if usage.closed:
            return
        usage.closed = True
        usage.ended_at = time.monotonic()
        with anyio.CancelScope(shield=True):
            row = dict(
                request_id=usage.request_id,
                created_at=usage.created_at,
                workspace_id=usage.principal.workspace_id,
                key_id=usage.principal.key_id,
                model=usage.model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                status=status,
                latency_ms=usage.latency_ms,
                cancelled=usage.cancelled,
                prev_shown_chars=usage.judged.shown_chars if usage.judged else None,
                prev_accepted_chars=usage.judged.accepted_chars if usage.judged else None,
            )
            # The row first: if it cannot be written the answer is withheld (an answered
            # request always has its row); the reservation is settled either way.
            failed: Exception | None = None
            try:
                await run_sync(self.ledger.record, row)
            except (SQLAlchemyError, OSError) as exc:
                log.error("writing usage row %s failed: %s", usage.request_id, type(exc).__name__)
                failed = exc
            if usage.admitted:
                try:
                    used = usage.prompt_tokens + usage.completion_tokens
                    await self.limiter.settle(usage.bucket, usage.request_id, used)
                except (RedisError, OSError) as exc:  # the reservation simply stands
                    log.error("settling a reservation failed: %s", type(exc).__name__)
            if failed is not None:
                raise LedgerUnavailable(
                    "the usage ledger is unavailable, so this completion was not recorded and "
                    "is withheld; retry shortly"
                ) from None

    async def reachable(self, timeout: float = 2.0) -> dict[str, str]:
        """Whether the database and the rate limiter's store answer (readiness)."""
        checks = {}
        for name, probe in (("database", self._ping_database), ("rate_limiter", self.limiter.ping)):
            try:
                with anyio.fail_after(timeout):
                    await probe()
                checks[name] = "ok"
            except Exception as exc:  # any failure means: do not send traffic here
                checks[name] = f"unreachable ({type(exc).__name__})"
        return checks

    async def _ping_database(self) -> None:
        await run_sync(self.database.ping, abandon_on_cancel=True)

    async def aclose(self) -> None:
        await self.limiter.aclose()
        self.database.close()
