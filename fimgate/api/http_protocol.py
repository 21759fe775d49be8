"""uvicorn's HTTP/1.1 protocol (h11) with a deadline on a request's headers.

uvicorn hands a request to the app only once its headers are in, and bounds nothing before:
a client that opens a connection and sends its headers a byte at a time (or nothing at all)
holds the connection, a file descriptor and a slot of ``--limit-concurrency`` for as long as
it likes. Here a connection waiting for a request's headers, new or kept alive after an
answer, gets ``seconds`` to send them whole; then a 408 in the API's error format and the
connection closed (nginx's ``client_header_timeout``). The body has its own deadline, in the
route (api/request_body.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from fimgate.api.errors import error_body

log = logging.getLogger("fimgate.api")


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps(
        error_body(
            f"the request's headers did not arrive whole within {seconds:g} s",
            "invalid_request_error",
            code="request_timeout",
        )
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def with_header_deadline(
    seconds: float, timed_out: Callable[[], None] = lambda: None
) -> type[H11Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``; ``timed_out`` is called for each
    connection closed for it (a metric)."""

    class HeaderDeadlineProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            self._arm()  # before the next request's headers, pipelined ones included
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            # IDLE: h11 has not yet read a whole request line and headers. Any other state
            # means a request is under way (its body has the route's deadline) or answered.
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            log.warning(
                "closed a connection from %s: no whole request headers within %s s",
                self.client[0] if self.client else "?", seconds,
            )  # fmt: skip
            timed_out()
            self.transport.write(_timeout_response(seconds))
            self.transport.close()

    return HeaderDeadlineProtocol
