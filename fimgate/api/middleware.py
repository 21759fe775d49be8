"""What every request passes before a route sees it, outermost first:

0. ``StampArrival``: the request's clock starts here, before the key check, so its recorded
   latency is what the client waited (a slow key store included).
1. ``RefuseBrowserOrigins``: a request with an ``Origin`` header comes from a web page, where
   any visitor could read the API key: 403, and no CORS headers (unless the origin is on the
   allow-list, which then gets ordinary CORS).
2. ``Authenticate``: a Bearer key is required everywhere but the public paths the routes name
   (health, readiness, metrics, which has its own check); the caller it names is put on the
   request. A refusal is written in the shape the path's clients parse (api/wires), and a
   missing key names the setting where their users put one. Two ``Authorization`` headers
   are refused: a proxy reading the other one would account the request to another key.

That is all: what a FIM request costs, and its record, are ``api.serving``'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fimgate.api.errors import ApiError, error_response, unavailable
from fimgate.gateway.core import Gateway, GatewayUnavailable
from fimgate.gateway.keys import InvalidKey

Writer = Callable[[ApiError, dict[str, str] | None], JSONResponse]


async def _refuse(
    scope: Scope, receive: Receive, send: Send, error: ApiError, writer: Writer = error_response
) -> None:
    await writer(error, None)(scope, receive, send)


async def _refused_at_key_check(
    scope: Scope, receive: Receive, send: Send, error: ApiError, writer: Writer
) -> None:
    # No ledger row (no workspace to charge): the metric is what counts these.
    scope["app"].state.metrics.key_check_refused.labels(error.code or error.type).inc()
    await _refuse(scope, receive, send, error, writer)


ARRIVED = "arrived"  # the request's state: time.monotonic() when it reached the app


class StampArrival:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})[ARRIVED] = time.monotonic()
        await self.app(scope, receive, send)


class RefuseBrowserOrigins:
    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app = app
        self.allowed = set(allowed)
        self.cors = (
            CORSMiddleware(
                app,
                allow_origins=list(allowed),
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type"],
            )
            if allowed
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        origin = Headers(scope=scope).get("origin")
        if origin is None:
            return await self.app(scope, receive, send)
        if origin in self.allowed and self.cors is not None:
            return await self.cors(scope, receive, send)
        await _refuse(
            scope,
            receive,
            send,
            ApiError(
                403,
                "requests from web browsers are refused: an API key in a web page can be read "
                "by anyone who loads it. Call this API from a server, an editor or a script "
                "(a request with an Origin header is a browser's), or ask the administrator "
                "to allow this origin (FIMGATE_ALLOWED_ORIGINS).",
                type="permission_error",
                code="browser_origin_refused",
            ),
        )


def _unauthorized(message: str, code: str, challenge: str) -> ApiError:
    return ApiError(
        401,
        message,
        type="authentication_error",
        code=code,
        headers={"WWW-Authenticate": challenge},
    )


def _bearer(headers: Headers) -> str | None:
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class Authenticate:
    def __init__(
        self, app: ASGIApp, public: frozenset[str],
        refusal_for: Callable[[str], tuple[Writer, str]],
    ) -> None:  # fmt: skip
        self.app = app
        self.public = public  # paths open to all (health, readiness; metrics checks its own)
        self.refusal_for = refusal_for  # a path's error writer, and where its users put a key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            return await self.app(scope, receive, send)
        gateway: Gateway = scope["app"].state.gateway
        writer, where = self.refusal_for(scope["path"])
        headers = Headers(scope=scope)
        if (sent := len(headers.getlist("authorization"))) > 1:
            message = (
                f"send one 'Authorization' header: this request has {sent}, and a proxy may "
                "read another one than this server does"
            )
            error = _unauthorized(message, "ambiguous_api_key", 'Bearer error="invalid_request"')
            return await _refused_at_key_check(scope, receive, send, error, writer)
        key = _bearer(headers)
        if key is None:
            message = "an API key is required: send the header 'Authorization: Bearer <key>'"
            message += f" (set it in {where})" if where else ""
            error = _unauthorized(message, "missing_api_key", "Bearer")
            return await _refused_at_key_check(scope, receive, send, error, writer)
        try:
            principal = await gateway.authenticate(key)
        except GatewayUnavailable as exc:
            error = unavailable(str(exc))
            return await _refused_at_key_check(scope, receive, send, error, writer)
        except InvalidKey as exc:
            error = _unauthorized(str(exc), "invalid_api_key", 'Bearer error="invalid_token"')
            return await _refused_at_key_check(scope, receive, send, error, writer)
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)
