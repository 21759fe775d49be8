"""Reading a request's body, for any wire: size-capped, JSON whatever the Content-Type says,
lone UTF-16 surrogates made text the model can read, and checked against the wire's schema.

Clients get the Content-Type wrong in ordinary ways (curl's ``-d`` says form-encoded, some
send ``text/plain`` or none), and a body that parses as JSON is what they meant. A lone
surrogate (``"\\ude00"``) is valid JSON but not text: Mistral's JavaScript SDK sends one when
it cuts a prompt inside an emoji. Each becomes U+FFFD, the replacement character, as a UTF-8
decoder would make of a broken sequence, and the request is served.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from fimgate.api.errors import ApiError, describe_validation, validation_detail

Schema = TypeVar("Schema", bound=BaseModel)

_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyGone(Exception):
    """The client left while sending its body: there is nobody to answer."""


def too_large(max_bytes: int) -> ApiError:
    return ApiError(
        413, f"the request body is over {max_bytes} bytes; send less context",
        code="request_too_large",
    )  # fmt: skip


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, within ``timeout_s``: a client that stops sending (a body shorter than
    its Content-Length, a trickle) gets a 408 and its connection closed, not a worker held."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for part in request.stream():
                body += part
                if len(body) > max_bytes:
                    raise too_large(max_bytes)
    except ClientDisconnect:
        raise BodyGone from None
    except TimeoutError:
        expected = f" of {declared}" if declared.isdigit() else ""
        raise ApiError(
            408, f"the request body did not arrive within {timeout_s:g} s ({len(body)}"
            f"{expected} bytes received); send it whole", code="request_timeout",
            headers={"Connection": "close"},
        ) from None  # fmt: skip
    return bytes(body)


class _NotFinite(ValueError):
    pass


def _finite(text: str) -> float:
    # JSON has no NaN or Infinity (Python's parser takes both, and 1e400 as infinity); such a
    # value would also make the error that echoes it unsendable.
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"{text} is not a finite number")
    return value


def _no_constant(name: str) -> float:
    raise _NotFinite(f"{name} is not JSON")


def _mend(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        if not _SURROGATE.search(value):
            return value
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if isinstance(value, dict):
        return {_mend(k): _mend(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mend(v) for v in value]
    return value


def parse_body(body: bytes, schema: type[Schema]) -> Schema:
    """The body as ``schema``, or a 422 that says what is wrong with it."""
    try:
        data = _mend(json.loads(body, parse_float=_finite, parse_constant=_no_constant))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "empty" if not body.strip() else str(exc) or type(exc).__name__
        raise ApiError(
            422, f"invalid request: the body must be a JSON object ({reason}); send "
            "'Content-Type: application/json' with a JSON body", code="invalid_json",
        ) from None  # fmt: skip
    if not isinstance(data, dict):
        raise ApiError(
            422, f"invalid request: the body must be a JSON object, not {type(data).__name__}",
            code="validation_error",
        )  # fmt: skip
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise ApiError(
            422, describe_validation(errors), code="validation_error",
            detail=validation_detail(errors),
        ) from None  # fmt: skip
