"""A request's state while it runs, and the one record it leaves when it ends.

The serving step moves a request through ``RequestState`` (as llama.cpp moves a slot through
its states) and, when it ends, makes one immutable ``Outcome``. The ledger row, the rate
limiter's settle, the metrics and the log line are all made from that record, once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fimgate.gateway.acceptance import Verdict
from fimgate.gateway.keys import Principal
from fimgate.gateway.ratelimit import Decision


class RequestState(enum.Enum):
    RECEIVED = "received"  # its body is read, its model resolved, its prompt encoded
    ADMITTED = "admitted"  # the rate limiter took it; waiting for its first token
    GENERATING = "generating"  # tokens flow to the client
    # How it ended: one of these, once.
    ANSWERED = "answered"
    REFUSED = "refused"  # an error answer (4xx, or 503 before the engine ran)
    CANCELLED = "cancelled"  # the client left
    FAILED = "failed"  # the engine failed, or a fault of ours

    @property
    def ended(self) -> bool:
        return self in (RequestState.ANSWERED, RequestState.REFUSED, RequestState.CANCELLED,
                        RequestState.FAILED)  # fmt: skip


@dataclass(frozen=True)
class Admission:
    """What the rate limiter reserved for a request: settled to the real count at its end."""

    bucket: str
    decision: Decision
    prompt_tokens: int


@dataclass(frozen=True)
class Outcome:
    request_id: str
    route: str  # the kind of request: its wire (fim, infill, ...), or a kind within one
    client_request_id: str | None  # the client's x-request-id, when it sent one
    principal: Principal
    created_at: datetime
    model: str | None
    stream: bool
    state: RequestState
    status: int  # the HTTP status it had, or would have had (a stream cut by an engine: 503)
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    ttft_s: float | None  # to the first token, when one was sent
    admission: Admission | None  # None: refused before the rate limiter took it
    decision: Decision | None  # the rate limiter's last word on it, for its headers
    judged: Verdict | None  # the editor's previous completion, judged by this prompt
    streamed: bool = False  # a stream's response had begun: headers and text were sent

    @property
    def cancelled(self) -> bool:
        return self.state is RequestState.CANCELLED

    @property
    def withheld_unrecorded(self) -> bool:
        """Whether its client is told 503 ``usage_not_recorded`` instead when its row cannot
        be written: every answer but a stream's already under way, one whose client left, and
        a fault of ours (the app's handler answers that 500)."""
        return not (self.streamed or self.cancelled or self.status == 500)

    def ledger_row(self) -> dict[str, Any]:
        """Its row in the usage ledger (store/tables.py UsageRecord)."""
        return dict(
            request_id=self.request_id,
            route=self.route,
            created_at=self.created_at,
            workspace_id=self.principal.workspace_id,
            key_id=self.principal.key_id,
            model=self.model,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            status=self.status,
            latency_ms=self.latency_s * 1000,
            cancelled=self.cancelled,
            prev_shown_chars=self.judged.shown_chars if self.judged else None,
            prev_accepted_chars=self.judged.accepted_chars if self.judged else None,
        )
