"""The request path without a model (the fast tier): every refusal, every way a request
ends and what it leaves (one ledger row, the limiter settled, metrics, headers), SSE framing,
and what an editor's requests leave for its next one. The real app, gateway and engine
above a stand-in model (tests/engine_double.py); the model's own behaviour is the model
tier's."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fimgate.gateway.outcome import RequestState
from tests.fast_app import MODEL, URL, FastApp, fast_app, sse_events

pytestmark = [pytest.mark.fast, pytest.mark.anyio]

PROMPT = "def add(a, b):\n    "
BODY = {"model": "codestral-latest", "prompt": PROMPT, "suffix": "\n"}
STREAM = {**BODY, "stream": True}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def fast(tmp_path: Path) -> AsyncIterator[FastApp]:
    async with fast_app(tmp_path, n_ctx=512) as app:
        yield app


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["object"] == "error" and body["code"] == code and body["message"], body
    return body


# -- refusals ----------------------------------------------------------------------------------


async def test_no_key_or_a_wrong_key_is_a_401_and_no_row(fast: FastApp) -> None:
    response = await fast.client.post(URL, json=BODY)
    _error(response, 401, "missing_api_key")
    assert response.headers["www-authenticate"] == "Bearer"
    _error(await fast.post(BODY, key="fg-nope-nope"), 401, "invalid_api_key")
    assert fast.rows() == []


async def test_two_authorization_headers_are_a_401_and_no_row(fast: FastApp) -> None:
    """A proxy that reads the other header would account the request to another key."""
    other = fast.workspace("other")
    for second in (f"Bearer {other}", f"Bearer {fast.key}"):
        headers = [("Authorization", f"Bearer {fast.key}"), ("Authorization", second)]
        response = await fast.client.post(URL, json=BODY, headers=headers)
        assert "2" in _error(response, 401, "ambiguous_api_key")["message"]
    assert fast.rows() == []
    assert (await fast.post(BODY)).status_code == 200


async def test_the_recorded_latency_counts_from_the_requests_arrival(
    fast: FastApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow key check (a frozen database: issue 29) is part of what the client waited; the
    ledger row says so (a lower bound only: how fast the rest runs is free)."""
    check = fast.gateway.keys.authenticate

    def slow_check(key: str):  # type: ignore[no-untyped-def]
        time.sleep(0.3)
        return check(key)

    monkeypatch.setattr(fast.gateway.keys, "authenticate", slow_check)
    assert (await fast.post(BODY)).status_code == 200
    (row,) = fast.rows()
    assert row.latency_ms >= 300


async def test_a_key_store_that_does_not_answer_in_time_is_a_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen database (alive, silent) holds a pooled connection's query for as long as it
    is frozen: the key check is given up after ``store_read_s`` (the real store, its check
    held longer than that), and the request refused with a Retry-After, not held."""
    async with fast_app(tmp_path, n_ctx=512, store_read_s=0.2) as app:
        check, thawed = app.gateway.keys.authenticate, threading.Event()

        def frozen_check(key: str):  # type: ignore[no-untyped-def]
            thawed.wait(30)
            return check(key)

        monkeypatch.setattr(app.gateway.keys, "authenticate", frozen_check)
        response = await app.post(BODY)
        thawed.set()
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert response.json()["type"] == "service_unavailable" and app.rows() == []
        metrics = (await app.client.get("/metrics")).text
        assert 'fimgate:key_check_refusals_total{reason="service_unavailable"} 1.0' in metrics
        monkeypatch.setattr(app.gateway.keys, "authenticate", check)
        assert (await app.post(BODY)).status_code == 200  # back once the store answers


async def test_a_ledger_write_past_its_deadline_withholds_and_is_amended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen database holds a row's write: past ``ledger_write_s`` the answer is withheld
    (503 usage_not_recorded), and the row, written once the database thaws, is amended to
    say the client got that 503: one row, telling what the client got, and not two."""
    async with fast_app(tmp_path, n_ctx=512, ledger_write_s=0.2) as app:
        record, thawed = app.gateway.ledger.record, threading.Event()

        def frozen_record(row: dict) -> None:
            thawed.wait(30)
            record(row)

        monkeypatch.setattr(app.gateway.ledger, "record", frozen_record)
        response = await app.post(BODY)
        _error(response, 503, "usage_not_recorded")
        assert app.rows() == []  # not yet: the write still waits for the database
        thawed.set()
        await app.gateway.late_rows_written()
        (row,) = app.rows()
        assert row.status == 503 and row.request_id == response.headers["x-request-id"]
        metrics = (await app.client.get("/metrics")).text
        assert 'route="fim",status="503",workspace="default"} 1.0' in metrics
        monkeypatch.setattr(app.gateway.ledger, "record", record)
        assert (await app.post(BODY)).status_code == 200  # back once the database answers
        assert [r.status for r in app.rows()] == [503, 200]


async def test_a_late_row_whose_write_failed_is_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database lost while a row's write was held (its connection broken): the row is
    written again once the database takes it, saying what the client got (503), not lost."""
    from sqlalchemy.exc import OperationalError

    async with fast_app(tmp_path, n_ctx=512, ledger_write_s=0.2) as app:
        record, thawed, calls = app.gateway.ledger.record, threading.Event(), []

        def broken_then_back(row: dict) -> None:
            calls.append(row["status"])
            if len(calls) == 1:
                thawed.wait(30)
                raise OperationalError("INSERT", {}, Exception("server closed the connection"))
            record(row)

        monkeypatch.setattr(app.gateway.ledger, "record", broken_then_back)
        # A stream refused before it began (an unknown model): its client gets the 503.
        response = await app.post({**BODY, "model": "nope", "stream": True})
        _error(response, 503, "usage_not_recorded")
        thawed.set()
        await app.gateway.late_rows_written()
        statuses = {r.request_id: r.status for r in app.rows()}
        assert statuses[response.headers["x-request-id"]] == 503


async def test_a_body_that_stops_short_is_a_408_and_no_hang(tmp_path: Path) -> None:
    """Half the body sent, then nothing (a body shorter than its Content-Length): the route
    gives up after ``body_read_s``, answers 408 and asks for the connection to close."""
    async with fast_app(tmp_path, n_ctx=512, body_read_s=0.2) as app:
        scope, raw = app.scope(BODY)
        scope["headers"].append((b"content-length", str(len(raw)).encode()))
        sent: list[dict] = []
        parts = [{"type": "http.request", "body": raw[:10], "more_body": True}]

        async def receive() -> dict:
            if parts:
                return parts.pop()
            await asyncio.Event().wait()  # the client sends nothing more, and stays
            return {}

        async def send(message: dict) -> None:
            sent.append(message)

        await app.app(scope, receive, send)
        start, body = sent[0], json.loads(sent[1]["body"])
        assert start["status"] == 408 and (b"connection", b"close") in start["headers"]
        assert body["code"] == "request_timeout" and f"10 of {len(raw)}" in body["message"]
        assert [r.status for r in app.rows()] == [408]


async def test_a_browser_origin_is_a_403(fast: FastApp) -> None:
    response = await fast.post(BODY, headers={"Origin": "https://evil.example"})
    _error(response, 403, "browser_origin_refused")
    assert "access-control-allow-origin" not in response.headers


async def test_each_refusal_has_its_status_its_code_and_one_row(tmp_path: Path) -> None:
    async with fast_app(tmp_path, n_ctx=256, max_body_bytes=2048, regions=["eu"]) as fast:
        cases = [
            (fast.post(BODY, content=b"{not json"), 422, "invalid_json"),
            (fast.post({**BODY, "temperature": 9}), 422, "validation_error"),
            (fast.post({**BODY, "prompt": "x" * 3000}), 413, "request_too_large"),
            (fast.post(BODY, url="/mistral/us/v1/fim/completions"), 404, "region_not_found"),
            (fast.post({**BODY, "model": "nope"}), 404, "model_not_found"),
            (fast.post({**BODY, "prompt": "x = 1\n" * 60}), 400, "context_length_exceeded"),
        ]
        for call, status, code in cases:
            _error(await call, status, code)
        rows = fast.rows()
        assert [r.status for r in rows] == [422, 422, 413, 404, 404, 400]
        assert all(r.prompt_tokens == 0 and r.completion_tokens == 0 for r in rows)


async def test_a_prompt_over_the_context_still_gets_the_limit_headers(tmp_path: Path) -> None:
    async with fast_app(tmp_path, n_ctx=256) as fast:
        response = await fast.post({**BODY, "prompt": "x = 1\n" * 60})
        _error(response, 400, "context_length_exceeded")
        assert response.headers["x-ratelimit-remaining-requests"] == "500"


async def test_requests_per_minute_are_exact_and_a_minute_later_there_is_room(
    fast: FastApp,
) -> None:
    key = fast.workspace("two", rpm=2)
    assert [(await fast.post(BODY, key=key)).status_code for _ in range(2)] == [200, 200]
    refused = await fast.post(BODY, key=key)
    body = _error(refused, 429, "rate_limit_exceeded")
    assert "2 requests per minute" in body["message"]
    assert refused.headers["retry-after"] == "60"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    fast.clock.now += 60  # the first two leave the window
    assert (await fast.post(BODY, key=key)).status_code == 200
    assert [r.status for r in fast.rows("two")] == [200, 200, 429, 200]


async def test_a_prompt_over_the_tokens_per_minute_is_a_413_not_a_429(fast: FastApp) -> None:
    key = fast.workspace("small", tpm=10)
    response = await fast.post(BODY, key=key)
    body = _error(response, 413, "exceeds_token_rate_limit")
    assert "10 tokens" in body["message"] and "limits set" in body["message"]
    assert response.headers["x-ratelimit-limit-tokens"] == "10"
    assert "retry-after" not in response.headers  # waiting would not help


async def test_tokens_reserved_are_settled_to_what_was_used(fast: FastApp) -> None:
    key = fast.workspace("tokens", tpm=1000)
    first = (await fast.post({**BODY, "max_tokens": 100}, key=key)).json()["usage"]
    second = await fast.post({**BODY, "max_tokens": 100}, key=key)
    used = first["prompt_tokens"] + first["completion_tokens"]
    reserved = second.json()["usage"]["prompt_tokens"] + 64  # FIMGATE_RESERVE_OUTPUT_TOKENS
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 1000 - used - reserved


async def test_a_draining_server_refuses_new_requests(fast: FastApp) -> None:
    fast.app.state.serving.draining = True
    response = await fast.post(BODY)
    _error(response, 503, "draining")
    assert response.headers["retry-after"] == "5"
    ready = await fast.client.get("/ready")
    assert ready.status_code == 503 and ready.json()["checks"]["draining"] != "no"


# -- answers, and every way a request ends ----------------------------------------------------


async def test_an_answer_and_a_stream_each_have_one_row_and_the_same_text(fast: FastApp) -> None:
    whole = await fast.post(BODY, headers={"x-request-id": "editor-42"})
    assert whole.status_code == 200 and whole.headers["x-request-id"] == "editor-42"
    answer = whole.json()
    assert answer["choices"][0]["message"]["content"] == "return a + b\n"
    assert answer["choices"][0]["finish_reason"] == "stop"
    streamed = await fast.post(STREAM)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events([{"type": "http.response.body", "body": streamed.content}])
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(e["choices"][0]["delta"]["content"] for e in events[1:-2]) == "return a + b\n"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["usage"] == answer["usage"] and events[-1] == {"done": True}
    assert {e.get("id") for e in events[:-1]} == {streamed.headers["x-request-id"]}
    rows = {r.request_id: r for r in fast.rows()}
    assert rows.keys() == {answer["id"], events[0]["id"]}
    assert all(r.status == 200 and not r.cancelled for r in rows.values())
    assert rows[answer["id"]].completion_tokens == answer["usage"]["completion_tokens"]


async def test_a_client_gone_before_the_first_token_is_a_499(fast: FastApp) -> None:
    script = fast.transport.script
    script.hold_at = 0
    sent = await fast.disconnecting(BODY, gone=script.reached)
    assert sent[0]["status"] == 499
    (row,) = fast.rows()
    assert row.status == 499 and row.cancelled and row.completion_tokens == 0
    assert fast.transport.stats()["cancelled"] == 1  # the engine stopped at once


async def test_a_stream_left_after_some_tokens_is_charged_for_them(fast: FastApp) -> None:
    script = fast.transport.script
    script.hold_at = 3
    sent = await fast.disconnecting(STREAM, gone=script.reached)
    events = sse_events(sent)
    assert "".join(e["choices"][0]["delta"]["content"] for e in events) == "ret"
    (row,) = fast.rows()
    assert row.status == 200 and row.cancelled and row.completion_tokens == 3
    assert fast.transport.stats()["cancelled"] == 1
    # /metrics counts it as left (499), not among the answered, though its headers said 200.
    text = (await fast.client.get("/metrics")).text
    assert 'model="test-model",route="fim",status="499",workspace="default"} 1.0' in text
    assert 'status="200"' not in text


async def test_health_and_metrics_tell_one_count_of_what_is_in_flight(fast: FastApp) -> None:
    """While a request runs, /health and /metrics read the same counts: the requests not yet
    settled and the engine's jobs; both go back to zero once it ends."""
    script = fast.transport.script
    script.hold_at = 1
    task = asyncio.create_task(fast.post(BODY))
    await script.reached.wait()

    async def counts() -> tuple[tuple[int, int], tuple[float, float]]:
        health = (await fast.client.get("/health")).json()
        metrics = (await fast.client.get("/metrics")).text
        wanted = ("fimgate:requests_in_flight", "fimgate:engine_jobs")
        gauge = {line.split(" ")[0]: float(line.split(" ")[1])
                 for line in metrics.splitlines() if line.startswith(wanted)}  # fmt: skip
        return (
            (health["requests_in_flight"], health["models"][MODEL]["active"]),
            (gauge["fimgate:requests_in_flight"],
             gauge[f'fimgate:engine_jobs_running{{model="{MODEL}"}}']),
        )  # fmt: skip

    assert await counts() == ((1, 1), (1.0, 1.0))
    script.resume.set()
    assert (await task).status_code == 200
    assert await counts() == ((0, 0), (0.0, 0.0))


@pytest.mark.parametrize("fail_at", [0, 3])
async def test_an_engine_that_fails_is_a_503_or_an_error_finish(
    fast: FastApp, fail_at: int
) -> None:
    fast.transport.script.fail_at = fail_at
    whole = await fast.post(BODY)
    assert whole.json()["type"] == "engine_error" and whole.status_code == 503
    streamed = sse_events(
        [{"type": "http.response.body", "body": (await fast.post(STREAM)).content}]
    )
    assert streamed[-2]["choices"][0]["finish_reason"] == "error"
    assert streamed[-1] == {"done": True}
    assert [(r.status, r.cancelled) for r in fast.rows()] == [(503, False), (503, False)]


async def test_a_generation_lost_midway_is_run_again_when_nothing_was_shown(
    fast: FastApp,
) -> None:
    """An upstream that goes silent after some tokens: a whole answer is made again (its
    client saw nothing), a stream, whose client saw the first tokens, ends with an error."""
    fast.transport.script.lose_at = 3
    whole = await fast.post(BODY)
    content = whole.json()["choices"][0]["message"]["content"]
    assert whole.status_code == 200 and content == "return a + b\n"
    assert fast.transport.stats()["requests"] == 2
    fast.transport.script.lose_at = 3
    streamed = sse_events(
        [{"type": "http.response.body", "body": (await fast.post(STREAM)).content}]
    )
    assert streamed[-2]["choices"][0]["finish_reason"] == "error"
    assert [(r.status, r.cancelled) for r in fast.rows()] == [(200, False), (503, False)]


async def test_a_ledger_that_refuses_rows_withholds_the_answer(fast: FastApp) -> None:
    database = Path(fast.gateway.database.engine.url.database or "")
    with sqlite3.connect(database) as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON usage BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    _error(await fast.post(BODY), 503, "usage_not_recorded")
    streamed = (await fast.post(STREAM)).content
    assert b"[DONE]" not in streamed and b'"finish_reason":"stop"' in streamed
    # Refusals cannot be recorded either: the refusal then says so.
    _error(await fast.post({**BODY, "model": "nope"}), 503, "usage_not_recorded")
    # The metrics count what each client was told: the whole answer's 503, the stream's 200
    # (its text was sent), the refusal's 503.
    metrics = (await fast.client.get("/metrics")).text
    for model, status in (("test-model", 503), ("test-model", 200), ("none", 503)):
        counted = f'model="{model}",route="fim",status="{status}",workspace="default"'
        assert f"fimgate:requests_total{{{counted}}} 1.0" in metrics


async def test_a_fault_of_ours_is_a_500_recorded_once(
    fast: FastApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(fast.transport, "run", broken)
    response = await fast.post(BODY)
    assert response.status_code == 500 and response.json()["object"] == "error"
    assert [r.status for r in fast.rows()] == [500]


async def test_metrics_count_each_request_once_and_the_gauges_come_back(fast: FastApp) -> None:
    await fast.post(BODY)
    await fast.post(STREAM)
    await fast.post({**BODY, "model": "nope"})
    text = (await fast.client.get("/metrics")).text
    answered = 'model="test-model",route="fim",status="200",workspace="default"'
    assert f"fimgate:requests_total{{{answered}}} 2.0" in text
    unknown = 'model="none",route="fim",status="404",workspace="default"'
    assert f"fimgate:requests_total{{{unknown}}} 1.0" in text
    assert 'fimgate:num_requests_running{model="test-model"} 0.0' in text
    assert 'fimgate:num_requests_waiting{model="test-model"} 0.0' in text
    assert 'fimgate:time_to_first_token_seconds_count{model="test-model"} 2.0' in text


async def test_each_state_ends_once(fast: FastApp) -> None:
    """The serving step's record of a request is made once, whatever calls it again."""
    from fimgate.api.serving import Live
    from fimgate.gateway.keys import Principal

    live = Live(Principal(1, "w", "k"), None, "fim")
    first = live.end(RequestState.ANSWERED, 200)
    assert first is not None and first.state is RequestState.ANSWERED
    assert live.end(RequestState.CANCELLED, 499) is None


# -- what an editor leaves for its next request -----------------------------------------------


async def test_the_next_prompt_judges_the_completion_shown(fast: FastApp) -> None:
    await fast.post(BODY)
    await fast.post({**BODY, "prompt": PROMPT + "return a + b\n"})
    first, second = fast.rows()
    assert first.prev_shown_chars is None
    assert (second.prev_shown_chars, second.prev_accepted_chars) == (12, 12)


async def test_typing_along_a_suggestion_gets_its_rest_without_the_model(fast: FastApp) -> None:
    await fast.post(BODY)
    runs = len(fast.transport.prompts)
    typed = (await fast.post({**BODY, "prompt": PROMPT + "ret"})).json()
    assert typed["choices"][0]["message"]["content"] == "urn a + b\n"
    assert len(fast.transport.prompts) == runs  # the model was not asked
    other = fast.workspace("other")
    await fast.post({**BODY, "prompt": PROMPT + "ret"}, key=other)
    assert len(fast.transport.prompts) == runs + 1  # another editor: its own completion


async def test_the_next_keystroke_waits_for_the_cancelled_one_to_let_go(fast: FastApp) -> None:
    script = fast.transport.script
    script.hold_at, script.release = 1, asyncio.Event()
    await fast.disconnecting(STREAM, gone=script.reached)
    script.hold_at = -1
    runs = len(fast.transport.prompts)
    other = asyncio.create_task(fast.post(STREAM, key=fast.workspace("other")))
    mine = asyncio.create_task(fast.post({**STREAM, "prompt": PROMPT + "x"}))
    await other  # another editor does not wait
    for _ in range(100):
        await asyncio.sleep(0)
    assert not mine.done() and len(fast.transport.prompts) == runs + 1
    script.release.set()  # llama.cpp lets go of the slot
    assert (await mine).status_code == 200


async def test_the_typed_text_is_written_again_by_the_model_but_not_sent(
    tmp_path: Path,
) -> None:
    """Past a block of prefix, the typed line goes after the suffix and its last word is taken
    back (typed_middle.py): the model writes it again first, the client does not get it."""
    async with fast_app(tmp_path, n_ctx=2048) as fast:
        prefix = "# a module\n" * 30 + "def add(a, b):\n    retu"
        response = await fast.post({**BODY, "prompt": prefix})
        assert response.json()["choices"][0]["message"]["content"] == "return a + b\n"
        run = fast.transport.prompts[-1]
        assert run[-4:] != [ord(c) + 1000 for c in "retu"]  # taken back from the prompt


async def test_lines_the_window_dropped_are_put_back(tmp_path: Path) -> None:
    async with fast_app(tmp_path, n_ctx=4096) as fast:
        lines = [f"line_{i} = {i}\n" for i in range(60)]
        await fast.post({**BODY, "prompt": "".join(lines[:50])})
        await fast.post({**BODY, "prompt": "".join(lines[2:51])})
        from tests.engine_double import decode

        assert decode(fast.transport.prompts[-1]).count("line_0 = 0") == 1
        usage = fast.rows()[-1].prompt_tokens
        assert usage == len("".join(lines[2:51])) + 1 + 3  # the client's own prompt, laid out


async def test_min_tokens_stops_and_the_context_end(tmp_path: Path) -> None:
    async with fast_app(tmp_path, n_ctx=256) as fast:
        longer = (await fast.post({**BODY, "min_tokens": 20, "max_tokens": 30})).json()
        assert longer["usage"]["completion_tokens"] >= 20
        stopped = (await fast.post({**BODY, "stop": [" +"]})).json()
        assert stopped["choices"][0]["message"]["content"] == "return a"
        assert stopped["choices"][0]["finish_reason"] == "stop"
        fast.transport.script.write = lambda prompt: "x" * 1000
        full = (await fast.post({**BODY, "prompt": "y = 2\n" * 30, "suffix": ""})).json()
        assert full["choices"][0]["finish_reason"] == "model_length"
        assert full["usage"]["total_tokens"] == 256
        capped = (await fast.post({**BODY, "max_tokens": 5})).json()
        assert capped["choices"][0]["finish_reason"] == "length"
        assert capped["usage"]["completion_tokens"] == 5


# -- the other routes ----------------------------------------------------------------------------


async def test_models_health_and_readiness(fast: FastApp) -> None:
    headers = {"Authorization": f"Bearer {fast.key}"}
    listed = (await fast.client.get("/v1/models", headers=headers)).json()
    assert {m["id"] for m in listed["data"]} >= {MODEL, "codestral-latest"}
    one = await fast.client.get("/mistral/eu/v1/models/codestral-latest", headers=headers)
    assert one.json()["name"] == MODEL
    missing = await fast.client.get("/v1/models/nope", headers=headers)
    _error(missing, 404, "model_not_found")
    health = (await fast.client.get("/health")).json()
    assert health["status"] == "ok" and "upstreams" not in health
    ready = await fast.client.get("/api/public/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "models": "ok", "database": "ok", "rate_limiter": "ok", "draining": "no"
    }  # fmt: skip


# -- what tests/test_gateway.py asked of a model server, without one -------------------------


async def test_a_wrong_key_is_not_echoed(fast: FastApp) -> None:
    forged = fast.key[:-4] + ("AAAA" if not fast.key.endswith("AAAA") else "BBBB")
    for key in (forged, "fg-000000000000-secret", "sk-not-ours"):
        response = await fast.post(BODY, key=key)
        body = _error(response, 401, "invalid_api_key")
        assert key not in response.text and "secret" not in body["message"]
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_without_a_key_a_bad_body_is_a_401_not_a_422(fast: FastApp) -> None:
    _error(await fast.client.post(URL, content=b"{not json"), 401, "missing_api_key")
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Token abc"):
        response = await fast.client.post(URL, json=BODY, headers={"Authorization": header})
        _error(response, 401, "missing_api_key")
    assert (await fast.client.get("/health")).status_code == 200  # an open route


async def test_a_revoked_key_is_refused_at_its_next_request(fast: FastApp) -> None:
    key = fast.workspace("revoked")
    assert (await fast.post(BODY, key=key)).status_code == 200
    fast.gateway.keys.revoke(key)
    _error(await fast.post(BODY, key=key), 401, "invalid_api_key")


async def test_a_browser_preflight_is_a_403_too(fast: FastApp) -> None:
    response = await fast.client.options(
        URL, headers={"Origin": "https://example.com", "Access-Control-Request-Method": "POST"}
    )
    _error(response, 403, "browser_origin_refused")
    assert not [h for h in response.headers if h.startswith("access-control-")]


async def test_the_body_cap_holds_without_a_content_length(tmp_path: Path) -> None:
    async with fast_app(tmp_path, n_ctx=512, max_body_bytes=4096) as fast:
        data = json.dumps({**BODY, "prompt": "x = 1\n" * 2000}).encode()

        async def chunks() -> AsyncIterator[bytes]:  # a chunked upload: no Content-Length
            for i in range(0, len(data), 1024):
                yield data[i : i + 1024]

        _error(await fast.post(BODY, content=chunks()), 413, "request_too_large")
        assert (await fast.post(BODY)).status_code == 200


async def test_a_burst_admits_exactly_the_requests_per_minute(fast: FastApp) -> None:
    key = fast.workspace("burst", rpm=10)
    responses = await asyncio.gather(*(fast.post(BODY, key=key) for _ in range(15)))
    assert sorted(r.status_code for r in responses) == [200] * 10 + [429] * 5
    for response in responses:
        assert response.headers["x-ratelimit-limit-req-minute"] == "10"
    assert sorted(r.status for r in fast.rows("burst")) == [200] * 10 + [429] * 5


async def test_a_burst_admits_exactly_the_tokens_per_minute(fast: FastApp) -> None:
    one = {**BODY, "max_tokens": 1}
    prompt_tokens = (await fast.post(one)).json()["usage"]["prompt_tokens"]
    # Each request reserves its prompt plus max_tokens (1): room for exactly 6.
    key = fast.workspace("tokens6", tpm=6 * (prompt_tokens + 1))
    responses = await asyncio.gather(*(fast.post(one, key=key) for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 6 + [429] * 4
    refused = [r for r in responses if r.status_code == 429]
    assert all("tokens per minute" in r.json()["message"] for r in refused)
