"""Fuzz the FIM endpoint with schemathesis, from the hosted gateway's OpenAPI
(``../shared/spec/hosted-fim-openapi.yaml``), against a real ``fimgate serve`` with the 0.5B:
valid requests (positive) and invalid ones (negative: wrong types, missing fields, values out
of range, other regions), each sent streamed or not as generated.

    python bench/fuzz.py [--requests 10000] [--spec PATH] [--url URL --key KEY]

Without the hosted spec (a checkout with no ../shared), the server's own /openapi.json is
fuzzed: the same request schema, as fimgate serves it.

Prints how many requests were generated and sent, the statuses they got, and the failures:
server errors (5xx), hangs (no answer in
--timeout seconds), and answers outside the contract (an error not in the API's envelope, a
200 that is not a completion). The target is 0 of each.

Differences from the hosted schema that the README documents, and how they are handled:
the response has no ``data`` field (not checked); unknown fields are a 422 (as the schema's
``additionalProperties: false`` says) except the ones real clients send. To keep 10,000
requests within the hour on 2 cores, a generated ``max_tokens`` over 4 (or none) is sent as
4, and the server started here keeps 64 tokens of a prefix and 16 of a suffix (``BUDGET``):
generation and prompt reading are what the test suite checks; this is about what arrives.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from local_server import start_fimgate
from schemathesis import GenerationMode

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "hosted-fim-openapi.yaml"
PATH = "/mistral/{region}/v1/fim/completions"
MAX_TOKENS = 4
# Prompts cut short (the server's own prompt budget, a deployment setting): a valid request
# with a random 1,000-token prompt would take seconds to read, and the reading is not what
# is under test. Prompts over the context are tested in tests/test_operations.py.
BUDGET = {
    "FIMGATE_MAX_PREFIX_TOKENS": "64",
    "FIMGATE_MAX_SUFFIX_TOKENS": "16",
    "FIMGATE_MAX_CONTEXT_TOKENS": "64",
}


def capped(body: Any) -> Any:
    """A body whose max_tokens is absent or a number over the cap gets the cap; any other
    value (a string, a negative number) is left for the server to refuse."""
    if not isinstance(body, dict):
        return body
    limit = body.get("max_tokens")
    number = isinstance(limit, int | float) and not isinstance(limit, bool)
    if "max_tokens" not in body or (number and limit > MAX_TOKENS):
        return {**body, "max_tokens": MAX_TOKENS}
    return body


def judge(response: httpx.Response, streamed: bool) -> str | None:
    """What is wrong with this answer, if anything."""
    status = response.status_code
    if status >= 500:
        return f"server error {status}: {response.text[:200]}"
    if status >= 400:
        try:
            body = response.json()
        except ValueError:
            return f"{status} not in the error envelope: {response.text[:200]}"
        if body.get("object") != "error" or not body.get("message"):
            return f"{status} not in the error envelope: {response.text[:200]}"
        return None
    if status != 200:
        return f"unexpected status {status}"
    if streamed:
        if not response.text.rstrip().endswith("data: [DONE]"):
            return f"a stream without [DONE]: {response.text[-200:]}"
        return None
    body = response.json()
    if body.get("object") != "chat.completion" or not body.get("choices"):
        return f"200 that is not a completion: {response.text[:200]}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--url", help="a running fimgate (default: start one)")
    parser.add_argument("--key", help="its API key")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    server = None
    if args.url:
        url, key = args.url.rstrip("/"), args.key or ""
    else:
        folder = Path(tempfile.mkdtemp(prefix="fimgate-fuzz-"))
        server = start_fimgate(folder, "--n-ctx", "1024", model=args.model, env=BUDGET)
        url, key = server.url, server.key
    if args.spec.exists():
        schema, spec_name = schemathesis.openapi.from_path(args.spec), args.spec.name
    else:  # a checkout without ../shared: the server's own document, the same request schema
        auth = {"Authorization": f"Bearer {key}"}
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=auth)
        spec_name = "openapi.json"
    operation = schema[PATH]["POST"]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    hangs = 0
    sent = 0
    client = httpx.Client(base_url=url, timeout=args.timeout)
    started = time.monotonic()

    @settings(
        max_examples=args.requests, deadline=None, database=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(case=cases)
    def send(case: schemathesis.Case) -> None:
        nonlocal hangs, sent
        if sent >= args.requests:
            return
        sent += 1
        body = capped(case.body)
        streamed = isinstance(body, dict) and body.get("stream") is True
        headers = {k: str(v) for k, v in (case.headers or {}).items()}
        headers["Authorization"] = f"Bearer {key}"
        kwargs: dict[str, Any] = {"headers": headers, "params": case.query or None}
        if isinstance(body, (bytes, str)):
            kwargs["content"] = body
        elif body is not None and not isinstance(body, schemathesis.core.NotSet):
            kwargs["content"] = json.dumps(body)
            headers.setdefault("Content-Type", case.media_type or "application/json")
        path = case.formatted_path
        try:
            response = client.post(path, **kwargs)
        except httpx.TimeoutException:
            hangs += 1
            failures.append(f"hang: POST {path} {str(body)[:200]}")
            return
        statuses[response.status_code] += 1
        if problem := judge(response, streamed):
            failures.append(f"{problem} <- POST {path} {str(body)[:200]}")
        if sent % 500 == 0:
            print(f"  {sent} sent, {len(failures)} failures", file=sys.stderr)

    try:
        while sent < args.requests:  # hypothesis may stop short of max_examples
            before = sent
            send()
            if sent == before:
                break
    finally:
        client.close()
        if server is not None:
            server.stop()
    seconds = time.monotonic() - started
    print(f"spec: {spec_name}; {sent} requests generated and sent in {seconds:.0f} s")
    print("statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    server_errors = sum(n for s, n in statuses.items() if s >= 500)
    print(f"server errors: {server_errors}; hangs: {hangs}; failures: {len(failures)}")
    for failure in failures[:20]:
        print("  " + failure)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
