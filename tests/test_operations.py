"""Operating the server: bad input that once got a 500, every error path recorded exactly once,
/metrics, the per-request log line, readiness, and SIGTERM as a drain. Real servers, a real
SQLite ledger (a trigger makes its writes fail), real llama.cpp upstreams that are killed."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from fimgate.local_process import stop
from tests.conftest import (
    Server,
    fimgate_cli,
    start_engine_server,
    start_server,
    stop_server,
    upstream_args,
)
from tests.test_gateway import ONE_TOKEN, URL

METRICS_TOKEN = "metrics-secret-for-tests"


@pytest.fixture(scope="module")
def ops() -> Iterator[Server]:
    server = start_server(
        "ops", "--n-ctx", "1024", "--log-format", "json",
        env={"FIMGATE_METRICS_TOKEN": METRICS_TOKEN},
    )  # fmt: skip
    yield server
    stop_server(server)


def _rows(server: Server) -> dict[str, dict]:
    return {r["request_id"]: r for r in json.loads(server.cli("usage", "--json"))}


def _events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


# -- bad input is never a 500 ----------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", None, "application/x-www-form-urlencoded"]
)  # the last is curl's -d
def test_json_body_is_read_whatever_the_content_type(ops: Server, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    with ops.client() as c:  # content= sends no Content-Type of its own
        response = c.post(URL, content=json.dumps(ONE_TOKEN), headers=headers)
    assert response.status_code == 200, response.text
    assert _rows(ops)[response.json()["id"]]["status"] == 200


def test_a_body_that_is_not_json_is_a_422_that_says_so(ops: Server) -> None:
    with ops.client() as c:
        response = c.post(URL, data={"model": "codestral-latest", "prompt": "x"})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_json" and "JSON" in body["message"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("where", ["prompt", "suffix", "model", "field name"])
def test_lone_surrogates_are_replaced_not_a_500(ops: Server, where: str, stream: bool) -> None:
    body = {**ONE_TOKEN, "stream": stream}
    if where == "field name":
        body["\ude00"] = 1
    else:
        body[where] = body[where] + "\ud83d"  # an emoji cut in half, as a JS SDK sent it
    raw = json.dumps(body)  # ASCII with \\ud83d escapes: valid JSON, not valid text
    with ops.client() as c:
        response = c.post(URL, content=raw, headers={"content-type": "application/json"})
    expected = {"prompt": 200, "suffix": 200, "model": 404, "field name": 422}[where]
    assert response.status_code == expected, response.text
    if expected != 200:
        assert "\ufffd" in response.json()["message"]  # the value, mended, is named


# -- one owner per request: each error path recorded exactly once ----------------------------


def test_every_outcome_has_exactly_one_row_and_the_request_id(ops: Server) -> None:
    sent = {
        "ok": ({**ONE_TOKEN}, 200),
        "ok-stream": ({**ONE_TOKEN, "stream": True}, 200),
        "bad-field": ({**ONE_TOKEN, "temperature": 9}, 422),
        "no-model": ({**ONE_TOKEN, "model": "nope"}, 404),
        "too-long": ({**ONE_TOKEN, "prompt": "x = 1\n" * 800}, 400),
    }
    ids = {}
    with ops.client() as c:
        for name, (body, status) in sent.items():
            response = c.post(URL, json=body, headers={"x-request-id": f"client-{name}"})
            assert response.status_code == status, response.text
            assert response.headers["x-request-id"] == f"client-{name}"  # kept, echoed
            ids[name] = status
    log = [json.loads(line) for line in ops.log.read_text().splitlines() if line.startswith("{")]
    lines = {e["client_request_id"]: e for e in log if e.get("event") == "fim_request"}
    rows = _rows(ops)
    for name, status in ids.items():
        line = lines[f"client-{name}"]  # one JSON line per request, with its fields
        assert line["status"] == status and line["workspace"] == "default"
        assert line["key_id"] and line["key_id"] in ops.key and line["latency_ms"] >= 0
        assert rows[line["request_id"]]["status"] == status  # and one ledger row
    per_id = [e["request_id"] for e in log if e.get("event") == "fim_request"]
    assert len(per_id) == len(set(per_id))  # never twice
    assert ops.key not in ops.log.read_text()


def test_failed_ledger_write_withholds_the_answer(ops: Server) -> None:
    """Nothing is answered unrecorded: with the ledger refusing rows, a completion is a 503
    (non-streamed) or a stream without [DONE]; once it takes rows again, all is well."""
    database = ops.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as db:
        db.execute(
            "CREATE TRIGGER refuse_rows BEFORE INSERT ON usage "
            "BEGIN SELECT RAISE(ABORT, 'ledger refuses rows'); END"
        )
    try:
        with ops.client() as c:
            response = c.post(URL, json=ONE_TOKEN)
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "usage_not_recorded"
            streamed = c.post(URL, json={**ONE_TOKEN, "stream": True})
            assert streamed.status_code == 200
            assert "[DONE]" not in streamed.text
    finally:
        with sqlite3.connect(database) as db:
            db.execute("DROP TRIGGER refuse_rows")
    with ops.client() as c:
        response = c.post(URL, json=ONE_TOKEN)
    assert response.status_code == 200
    assert response.json()["id"] in _rows(ops)


def test_engine_errors_are_503_and_recorded() -> None:
    """An upstream that dies before the answer is a 503; one that dies mid-stream ends the
    stream with finish_reason "error". Both are recorded as 503."""
    engine = start_engine_server("ops-engine")
    gateway = start_server("ops-upstream", *upstream_args([engine]))
    try:
        with gateway.client() as c:
            events: list[dict] = []
            body = {**ONE_TOKEN, "stream": True, "max_tokens": 400, "min_tokens": 400}
            with c.stream("POST", URL, json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        events.append(json.loads(line[6:]))
                        if len(events) == 3:  # tokens are flowing: kill the engine
                            stop(engine.process)
            assert events[-1]["choices"][0]["finish_reason"] == "error"
            streamed_id = events[0]["id"]
            after = c.post(URL, json=ONE_TOKEN)
            assert after.status_code == 503, after.text
            assert after.json()["type"] in ("engine_error", "service_unavailable")
        rows = _rows(gateway)
        assert rows[streamed_id]["status"] == 503 and not rows[streamed_id]["cancelled"]
        assert sorted(r["status"] for r in rows.values()) == [503, 503]
    finally:
        stop(engine.process)
        stop_server(gateway)


def test_a_database_that_is_gone_is_503_and_not_ready(postgres) -> None:
    url = postgres.new_database()
    server = start_server("ops-pg", "--n-ctx", "512", database_url=url)
    try:
        assert httpx.get(f"{server.url}/ready", timeout=10).status_code == 200
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")  # gone, connections and all
        with server.client() as c:
            response = c.post(URL, json=ONE_TOKEN)
        assert response.status_code == 503, response.text
        assert response.json()["type"] == "service_unavailable"
        ready = httpx.get(f"{server.url}/ready", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("unreachable")
    finally:
        stop_server(server)


# -- acceptance ------------------------------------------------------------------------------


def test_acceptance_is_inferred_from_the_next_prompt(ops: Server) -> None:
    ops.cli("workspaces", "create", "typist")
    key = ops.cli("keys", "create", "-w", "typist").strip()
    prompt = ONE_TOKEN["prompt"]
    with ops.client(key) as c:

        def complete(text: str, stream: bool = False) -> str:
            body = {**ONE_TOKEN, "prompt": text, "max_tokens": 8, "stream": stream}
            response = c.post(URL, json=body)
            assert response.status_code == 200, response.text
            if stream:
                return "".join(e["choices"][0]["delta"]["content"] for e in _events(response.text))
            return response.json()["choices"][0]["message"]["content"]

        first = complete(prompt)
        assert first.strip()
        second = complete(prompt + first + "\n", stream=True)  # the first taken whole
        assert second.strip()
        complete(prompt + first + "\n" + "0xDEADBEEF\n")  # the second ignored
    accepted = json.loads(ops.cli("usage", "--acceptance", "--json", "-w", "typist"))
    assert len(accepted) == 1
    assert accepted[0]["judged"] == 2 and accepted[0]["accepted"] == 1
    assert accepted[0]["accepted_chars"] == len(first.rstrip())
    assert accepted[0]["shown_chars"] == len(first.rstrip()) + len(second.rstrip())
    text = httpx.get(f"{ops.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    key_id = key.split("-")[1]
    labels = f'key="{key_id}",model="qwen2.5-coder-0.5b",workspace="typist"'
    assert f"fimgate:completions_accepted_total{{{labels}}} 1.0" in text.text
    assert f"fimgate:completions_judged_total{{{labels}}} 2.0" in text.text


# -- metrics and readiness -------------------------------------------------------------------


def test_metrics_show_the_series_after_completions(ops: Server) -> None:
    assert httpx.get(f"{ops.url}/metrics").status_code == 401  # the token is asked for
    with ops.client() as c:
        for stream in (False, True, False):
            assert c.post(URL, json={**ONE_TOKEN, "stream": stream}).status_code == 200
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    text = httpx.get(f"{ops.url}/metrics", headers=auth).text
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    model = 'model="qwen2.5-coder-0.5b"'
    answered = f'{model},route="fim",status="200",workspace="default"'
    assert values[f"fimgate:requests_total{{{answered}}}"] >= 3
    assert values[f"fimgate:time_to_first_token_seconds_count{{{model}}}"] >= 3
    assert values[f"fimgate:e2e_request_latency_seconds_count{{{model}}}"] >= 3
    assert values[f"fimgate:generation_tokens_total{{{model}}}"] >= 3
    sent = values[f"fimgate:prompt_tokens_sent_total{{{model}}}"]
    computed = values[f"fimgate:prompt_tokens_computed_total{{{model}}}"]
    assert sent > computed > 0  # the same prompt three times: the cache served most of it
    assert values[f"fimgate:num_requests_running{{{model}}}"] == 0
    assert values["fimgate:ledger_write_seconds_count"] >= 3
    secret = ops.key.split("-", 2)[2]
    assert ops.key not in text and secret not in text  # keys never; only their public id


def test_metrics_without_a_token_are_for_this_machine(server: Server) -> None:
    response = httpx.get(f"{server.url}/metrics")  # from 127.0.0.1
    assert response.status_code == 200 and "fimgate:requests_total" in response.text


def test_ready_says_what_it_checked(ops: Server) -> None:
    response = httpx.get(f"{ops.url}/api/public/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {
        "models": "ok", "database": "ok", "rate_limiter": "ok", "draining": "no"
    }  # fmt: skip


# -- drain -----------------------------------------------------------------------------------


def test_sigterm_drains_and_loses_nothing_answered() -> None:
    """SIGTERM with streams in flight: new requests get a 503 with Retry-After, /ready says
    no, every stream in flight ends with [DONE] and its row, and the process exits 0."""
    server = start_server(
        "ops-drain", "--n-ctx", "1024", "--parallel", "3",
        env={"FIMGATE_DRAIN_SECONDS": "600"},  # the bound is not what this tests
    )  # fmt: skip
    long = {**ONE_TOKEN, "stream": True, "max_tokens": 48, "min_tokens": 48}
    started = threading.Barrier(4)
    answers: list[str] = []

    def stream() -> None:
        with server.client() as c, c.stream("POST", URL, json=long) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: {"))
            started.wait()
            text = "\n".join([first, *lines])
        if text.rstrip().endswith("data: [DONE]"):
            answers.append(text)

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for thread in threads:
        thread.start()
    started.wait(timeout=300)  # all three are streaming
    server.process.send_signal(signal.SIGTERM)
    refused = httpx.post(
        f"{server.url}{URL}", json=ONE_TOKEN, headers={"Authorization": f"Bearer {server.key}"}
    )
    ready = httpx.get(f"{server.url}/ready")
    for thread in threads:
        thread.join(timeout=600)
    assert server.process.wait(timeout=120) == 0

    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert refused.json()["code"] == "draining"
    assert ready.status_code == 503
    assert len(answers) == 3  # every stream in flight was finished
    ledger = json.loads(fimgate_cli(server.database_url, "usage", "--json"))
    rows = {r["request_id"]: r for r in ledger}
    for text in answers:
        events = _events(text)
        row = rows[events[0]["id"]]
        assert row["status"] == 200 and row["completion_tokens"] == 48 and not row["cancelled"]
    assert sorted(r["status"] for r in rows.values()) == [200, 200, 200, 503]
