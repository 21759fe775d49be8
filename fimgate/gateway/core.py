"""The gateway's policies in one place: who is calling, may they, and what did it cost.

The serving step asks, per request: ``authenticate`` (the middleware, by key) → ``admit``
(after the prompt is tokenized: an ``Admission``, or a refusal that carries the limiter's
decision) → ``settle`` (once, from the request's ``Outcome``, whatever happened: the ledger
row, and the reservation settled to the tokens really used). The gateway answers with
values; it never writes into the caller's objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anyio
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from fimgate.gateway.keys import KeyStore, Principal
from fimgate.gateway.limits import LimitBook, Limits
from fimgate.gateway.outcome import Admission, Outcome
from fimgate.gateway.ratelimit import Decision, RateLimiter
from fimgate.gateway.usage import UsageLedger
from fimgate.store.database import Database

log = logging.getLogger("fimgate.gateway")
T = TypeVar("T")

# The store's threads: as many as the database pool's connections (store/database.py).
STORE_THREADS = 20
# How long a row given up on is tried again when its first write failed (the database lost
# while it was frozen): past this it is lost, and logged as such.
LATE_ROW_RETRY_S = 600.0


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

    def __init__(self, message: str, decision: Decision | None) -> None:
        super().__init__(message)
        self.decision = decision  # the window as it stands, for the refusal's headers


class Gateway:
    def __init__(
        self,
        database: Database,
        limiter: RateLimiter,
        defaults: Limits,
        output_estimate: int,
        store_read_s: float = 5.0,
        ledger_write_s: float = 5.0,
    ) -> None:
        self.database = database
        # A frozen database (alive, silent) never fails a pooled connection's query: the
        # reads a request waits on are given up after this, and the request refused; a row
        # not written after ``ledger_write_s`` withholds its answer (settle).
        self.store_read_s, self.ledger_write_s = store_read_s, ledger_write_s
        # The store's calls run in threads of their own, as many as the pool has connections:
        # threads stuck on a frozen database stay that many (the calls after them wait in
        # line, and a request's deadline gives up its place), and take no one else's.
        self._threads = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="fimgate-store")
        self._late: set[asyncio.Task[None]] = set()  # rows written past their deadline
        self.keys = KeyStore(database)
        self.limits = LimitBook(database, defaults)
        self.limiter = limiter
        self.ledger = UsageLedger(database)
        # Tokens reserved for the completion at admission (capped by max_tokens); the
        # reservation is settled to the real count when the request ends.
        self.output_estimate = output_estimate

    async def authenticate(self, key: str) -> Principal:
        try:
            return await self._read(self.keys.authenticate, key)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            log.error("key check failed: %s", type(exc).__name__)
            raise GatewayUnavailable("the key store is unavailable; retry shortly") from None

    async def _read(self, read: Callable[..., T], *args: object) -> T:
        """``read(*args)`` in a thread, given up after ``store_read_s`` (TimeoutError); the
        thread is left to finish on its own (a read changes nothing)."""
        with anyio.fail_after(self.store_read_s):
            return await self._in_thread(read, *args)

    def _in_thread(self, call: Callable[..., T], *args: object) -> asyncio.Future[T]:
        """``call(*args)`` in one of the store's threads. Cancelling the future before the
        call starts takes it out of the line; once it runs, it finishes on its own."""
        return asyncio.wrap_future(self._threads.submit(call, *args))

    async def admit(
        self,
        principal: Principal,
        request_id: str,
        model: str,
        aliases: tuple[str, ...],
        prompt_tokens: int,
        max_new_tokens: int,
    ) -> Admission:
        """Reserve one request and prompt + expected output tokens, or raise RateLimited or
        NeverFits. ``model`` is the served name (the budget's), ``aliases`` its other names."""
        limits = await self._limits(principal, model, aliases)
        bucket = f"{principal.workspace_id}:{model}"
        if prompt_tokens > limits.tpm:
            raise NeverFits(
                f"the prompt is {prompt_tokens} tokens, more than workspace "
                f"{principal.workspace!r} may use on model {model!r} in a minute "
                f"({limits.tpm} tokens); send less context, or raise the limit with "
                f"`fimgate limits set --tpm`",
                await self._peek(bucket, limits),
            )
        reserve = min(prompt_tokens + min(max_new_tokens, self.output_estimate), limits.tpm)
        try:
            decision = await self.limiter.admit(bucket, limits, request_id, reserve)
        except (RedisError, OSError) as exc:
            log.error("rate limiter failed: %s", type(exc).__name__)
            raise GatewayUnavailable("the rate limiter is unavailable; retry shortly") from None
        if not decision.allowed:
            raise RateLimited(decision, principal.workspace, model)
        return Admission(bucket, decision, prompt_tokens)

    async def peek(
        self, principal: Principal, model: str, aliases: tuple[str, ...]
    ) -> Decision | None:
        """The window as it stands, admitting nothing: the headers of a request refused
        before admission (a prompt over the context). Best effort: None if unknown."""
        try:
            limits = await self._limits(principal, model, aliases)
        except GatewayUnavailable:
            return None
        return await self._peek(f"{principal.workspace_id}:{model}", limits)

    async def _limits(self, principal: Principal, model: str, aliases: tuple[str, ...]) -> Limits:
        try:
            return await self._read(self.limits.resolve, principal.workspace_id, model, aliases)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            log.error("limit lookup failed: %s", type(exc).__name__)
            raise GatewayUnavailable("the limits store is unavailable; retry shortly") from None

    async def _peek(self, bucket: str, limits: Limits) -> Decision | None:
        with contextlib.suppress(RedisError, OSError):
            return await self.limiter.peek(bucket, limits)
        return None

    async def settle(self, outcome: Outcome) -> None:
        """Write the request's row and settle its reservation to the tokens it used. Shielded:
        a client that disconnects cancels the request's task, and its account must still be
        written. The row first: if it cannot be written within ``ledger_write_s``,
        LedgerUnavailable (the answer is withheld: an answered request always has its row);
        the reservation is settled either way."""
        with anyio.CancelScope(shield=True):
            failed = not await self._write_row(outcome)
            if outcome.admission is not None:
                used = outcome.prompt_tokens + outcome.completion_tokens
                try:
                    await self.limiter.settle(outcome.admission.bucket, outcome.request_id, used)
                except (RedisError, OSError) as exc:  # the reservation simply stands
                    log.error("settling a reservation failed: %s", type(exc).__name__)
            if failed:
                raise LedgerUnavailable(
                    "the usage ledger is unavailable, so this completion was not recorded and "
                    "is withheld; retry shortly"
                )

    async def _write_row(self, outcome: Outcome) -> bool:
        """Whether the row was written in time. One that is late (a frozen database) is left
        to finish, and then made to say what its client got (``_write_late``)."""
        write = self._in_thread(self.ledger.record, outcome.ledger_row())
        try:
            await asyncio.wait_for(asyncio.shield(write), self.ledger_write_s)
            return True
        except TimeoutError:
            log.error("writing usage row %s: no answer in %s s", outcome.request_id,
                      self.ledger_write_s)  # fmt: skip
            late = asyncio.ensure_future(self._write_late(outcome, write))
            self._late.add(late)
            late.add_done_callback(self._late.discard)
        except (SQLAlchemyError, OSError) as exc:
            log.error("writing usage row %s failed: %s", outcome.request_id, type(exc).__name__)
        return False

    async def _write_late(self, outcome: Outcome, write: asyncio.Future[None]) -> None:
        """A row given up on: once its write ends, it must say what the client got (503 for
        an answer withheld). A write that failed (the database lost meanwhile) is made again
        until it is taken, for up to ``LATE_ROW_RETRY_S``."""
        withheld = outcome.withheld_unrecorded
        try:
            await write
            if withheld:
                await self._in_thread(self.ledger.amend_status, outcome.request_id, 503)
            amended = " and amended to 503 (its answer was withheld)" if withheld else ""
            log.warning("usage row %s written late%s", outcome.request_id, amended)
            return
        except (SQLAlchemyError, OSError) as exc:
            log.error("late usage row %s failed: %s; trying again", outcome.request_id,
                      type(exc).__name__)  # fmt: skip
        row = outcome.ledger_row() | ({"status": 503} if withheld else {})
        deadline = asyncio.get_running_loop().time() + LATE_ROW_RETRY_S
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(1.0)
            try:
                await self._in_thread(self.ledger.record, row)
                log.warning("usage row %s written late", outcome.request_id)
                return
            except (SQLAlchemyError, OSError):
                continue
        log.error("usage row %s could not be written in %s s: lost", outcome.request_id,
                  LATE_ROW_RETRY_S)  # fmt: skip

    async def late_rows_written(self) -> None:
        """Wait for the rows still being written past their deadline (tests, shutdown)."""
        while self._late:
            await asyncio.wait(set(self._late))

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
        await self._in_thread(self.database.ping)

    async def aclose(self) -> None:
        # Rows still being written get as long as one write may take; a database frozen for
        # longer keeps them (the process is ending: logged, as a database down would be).
        if self._late:
            await asyncio.wait(set(self._late), timeout=self.ledger_write_s)
        if self._late:
            log.error("%d usage rows were still unwritten at shutdown", len(self._late))
        self._threads.shutdown(wait=False, cancel_futures=True)
        await self.limiter.aclose()
        self.database.close()
