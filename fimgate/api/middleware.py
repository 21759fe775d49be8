"""What every request passes before a route sees it, outermost first:

1. ``RefuseBrowserOrigins``: a request with an ``Origin`` header comes from a web page, where
   any visitor could read the API key: 403, and no CORS headers (unless the origin is on the
   allow-list, which then gets ordinary CORS).
2. ``Authenticate``: a Bearer key is required everywhere but /health; the workspace it
   belongs to is put on the request. FIM requests also get a usage account that is settled
   and written to the ledger before the last byte of the answer goes out, and their
   responses get the rate-limit headers.
3. ``LimitBodySize``: a body over the limit is a 413 before anything parses it.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fimgate.api.errors import ApiError, error_response
from fimgate.gateway.core import Gateway, GatewayUnavailable
from fimgate.gateway.keys import InvalidKey
from fimgate.gateway.ratelimit import Decision

PUBLIC_PATHS = frozenset({"/health", "/api/public/health"})
# A request with a body larger than this cannot be a valid FIM request anyway.
DEFAULT_MAX_BODY = 1 << 20


async def _refuse(scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
    await error_response(error)(scope, receive, send)


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


def _bearer(scope: Scope) -> str | None:
    scheme, _, token = (Headers(scope=scope).get("authorization") or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _duration(seconds: float) -> str:
    # OpenAI's reset header format: "1s", "6m0s", "350ms".
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(seconds // 60)}m{round(seconds % 60)}s"


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """OpenAI's and Mistral's rate-limit headers for one decision."""
    limits = decision.limits
    headers = {
        "x-ratelimit-limit-requests": str(limits.rpm),
        "x-ratelimit-remaining-requests": str(decision.remaining_requests),
        "x-ratelimit-reset-requests": _duration(decision.reset_requests),
        "x-ratelimit-limit-tokens": str(limits.tpm),
        "x-ratelimit-remaining-tokens": str(decision.remaining_tokens),
        "x-ratelimit-reset-tokens": _duration(decision.reset_tokens),
        "x-ratelimit-limit-req-minute": str(limits.rpm),
        "x-ratelimit-remaining-req-minute": str(decision.remaining_requests),
        "x-ratelimit-limit-tokens-minute": str(limits.tpm),
        "x-ratelimit-remaining-tokens-minute": str(decision.remaining_tokens),
    }
    if not decision.allowed:
        headers["retry-after"] = str(decision.retry_after_seconds)
        headers["retry-after-ms"] = str(max(1, round(decision.retry_after * 1000)))
    return headers


class Authenticate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        gateway: Gateway = scope["app"].state.gateway
        key = _bearer(scope)
        if key is None:
            message = "an API key is required: send the header 'Authorization: Bearer <key>'"
            error = _unauthorized(message, "missing_api_key", "Bearer")
            return await _refuse(scope, receive, send, error)
        try:
            principal = await gateway.authenticate(key)
        except GatewayUnavailable as exc:
            return await _refuse(
                scope, receive, send, ApiError(503, str(exc), type="service_unavailable")
            )
        except InvalidKey as exc:
            error = _unauthorized(str(exc), "invalid_api_key", 'Bearer error="invalid_token"')
            return await _refuse(scope, receive, send, error)
        state = scope.setdefault("state", {})
        state["principal"] = principal
        if not scope["path"].endswith("/fim/completions"):
            return await self.app(scope, receive, send)

        usage = state["usage"] = gateway.open(principal)
        status = 500

        async def send_accounted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = usage.request_id
                if usage.decision is not None:
                    headers.update(rate_limit_headers(usage.decision))
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # The row is committed before the answer's last byte: answered means recorded.
                usage.cancelled = usage.cancelled or status == 499
                await gateway.close(usage, status)
            await send(message)

        try:
            await self.app(scope, receive, send_accounted)
        finally:
            if not usage.closed:  # the client left, or the app failed, before the end
                usage.cancelled = True
                await gateway.close(usage, status)


class LimitBodySize:
    """Reads the body up front (it is small by construction) and refuses it past the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            f"the request body is over {self.max_bytes} bytes; send less context",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _refuse(scope, receive, send, self._too_large())
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await _refuse(scope, receive, send, self._too_large())
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # later: only the disconnect, which routes watch for

        await self.app(scope, replay, send)
