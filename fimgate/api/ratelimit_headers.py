"""OpenAI's and Mistral's rate-limit headers, which clients read to pace themselves."""

from __future__ import annotations

from fimgate.gateway.ratelimit import Decision


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
