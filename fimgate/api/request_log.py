"""One log line per FIM request, and the server's log format (text, or one JSON object a line
for log shippers).

The line carries the request id (the completion's id and the ledger's), the client's own
``x-request-id`` when it sent one, workspace, key id (the public part, never the key),
model, tokens, status, latency and whether the client cancelled.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any, Literal

from fimgate.gateway.outcome import Outcome

log = logging.getLogger("fimgate.requests")

LogFormat = Literal["text", "json"]


def request_fields(outcome: Outcome) -> dict[str, Any]:
    return {
        "request_id": outcome.request_id,
        "client_request_id": outcome.client_request_id,
        "workspace": outcome.principal.workspace,
        "key_id": outcome.principal.key_id,
        "model": outcome.model,
        "stream": outcome.stream,
        "status": outcome.status,
        "state": outcome.state.value,
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "latency_ms": round(outcome.latency_s * 1000, 1),
        "ttft_ms": None if outcome.ttft_s is None else round(outcome.ttft_s * 1000, 1),
        "cancelled": outcome.cancelled,
    }


def log_request(outcome: Outcome) -> None:
    fields = request_fields(outcome)
    text = " ".join(f"{k}={_text(v)}" for k, v in fields.items() if v is not None)
    log.info("fim %s", text, extra={"fields": fields})


def _text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a request's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields is not None:
            entry["event"] = "fim_request"
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def logging_config(fmt: LogFormat) -> dict[str, Any]:
    """A dictConfig for fimgate's and uvicorn's loggers, given to uvicorn as its log_config."""
    formatter = (
        {"()": JsonFormatter}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            name: {"handlers": ["stderr"], "level": "INFO", "propagate": False}
            for name in ("fimgate", "uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
