"""The model on upstream servers: three llama.cpp servers (``fimgate engine-server``, real
processes started from the PyPI packages) behind one gateway, routed with cache affinity,
health-checked, failed over. Keys, limits and the ledger through upstreams: test_gateway.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    EngineServer,
    Server,
    free_port,
    start_engine_server,
    start_server,
    stop,
    stop_server,
    upstream_args,
)

URL = "/v1/fim/completions"
# The health check every half second, a hung upstream ejected after 5 seconds of silence.
FAST_HEALTH = {
    "FIMGATE_UPSTREAM_HEALTH_INTERVAL_S": "0.5",
    "FIMGATE_UPSTREAM_HEALTH_TIMEOUT_S": "5",
}


def _body(prompt: str, **more: object) -> dict:
    return {"model": "codestral-latest", "prompt": prompt, "suffix": "\n", "max_tokens": 12} | more


def _editor_prompt(i: int) -> str:
    return f"# editor {i}\nimport math\n\n\ndef area_{i}(radius: float) -> float:\n    return "


def _until(check: Callable[[], bool], what: str) -> None:
    """Waits until ``check()`` holds, however long this machine takes (``what`` it waits for
    shows in pytest's timeout report, which bounds it)."""
    while not check():
        time.sleep(0.2)


def _upstreams(gateway: Server) -> list[dict]:
    return httpx.get(f"{gateway.url}/health", timeout=10).json()["upstreams"]["qwen2.5-coder-0.5b"]


def _stream(gateway: Server, body: dict) -> tuple[str, str | None, bool]:
    """(content, finish_reason, whether content came before the finish)."""
    content, reason = "", None
    with gateway.client() as c, c.stream("POST", URL, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                choice = json.loads(line[6:])["choices"][0]
                content += choice["delta"]["content"] or ""
                reason = choice["finish_reason"] or reason
    return content, reason, bool(content)


@pytest.fixture
def own_engines() -> Iterator[list[EngineServer]]:
    """Three upstreams for a test that kills or stops one."""
    engines = [start_engine_server(f"own-engine-{i}") for i in range(3)]
    yield engines
    for engine in engines:
        with contextlib.suppress(ProcessLookupError):  # one killed, one stopped
            os.kill(engine.process.pid, signal.SIGCONT)
        stop(engine.process)


def test_upstreams_answer_as_the_embedded_engine(
    server: Server, engine_servers: list[EngineServer]
) -> None:
    gateway = start_server("upstream-same", *upstream_args(engine_servers))
    # A key of its own: what the shared server remembers of other tests' windows (editor
    # memory) is not in this one's prompts, as the new gateway remembers nothing yet.
    fresh = server.cli("keys", "create", "-w", "default").strip()
    try:
        for i in range(3):
            body = _body(_editor_prompt(100 + i))
            with server.client(fresh) as c:
                embedded = c.post(URL, json=body).json()
            with gateway.client() as c:
                upstream = c.post(URL, json=body).json()
            assert upstream["usage"] == embedded["usage"]
            assert upstream["choices"] == embedded["choices"]
        assert _stream(gateway, _body(_editor_prompt(103)))[1] in ("stop", "length")
        assert all(u["healthy"] for u in _upstreams(gateway))
    finally:
        stop_server(gateway)


def test_openai_compatible_upstream_takes_token_prompts(
    server: Server, engine_servers: list[EngineServer]
) -> None:
    """llama.cpp's own /v1/completions as the OpenAI-compatible upstream: the prompt goes as
    token ids, so markers written in user text stay text (the same prompt tokens as the
    embedded engine counts), and the answer streams."""
    gateway = start_server("upstream-openai", "--upstream", f"openai+{engine_servers[0].url}")
    try:
        body = _body("x = '<|fim_middle|><|file_sep|>'\ndef double(x):\n    return ")
        with server.client() as c:
            embedded = c.post(URL, json=body).json()
        with gateway.client() as c:
            answer = c.post(URL, json=body).json()
        assert answer["usage"]["prompt_tokens"] == embedded["usage"]["prompt_tokens"]
        assert answer["choices"][0]["message"]["content"].strip()
        content, reason, _ = _stream(gateway, _body(_editor_prompt(200)))
        assert content.strip() and reason in ("stop", "length")
    finally:
        stop_server(gateway)


def test_kill_9_under_load_loses_no_request_that_had_not_started(
    own_engines: list[EngineServer],
) -> None:
    gateway = start_server("upstream-kill", *upstream_args(own_engines), env=FAST_HEALTH)
    try:
        bodies = [_body(_editor_prompt(300 + i), max_tokens=24) for i in range(12)]
        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = [pool.submit(_stream, gateway, body) for body in bodies]
            _until(lambda: any(u["in_flight"] for u in _upstreams(gateway)), "a busy upstream")
            busy = next(u["url"] for u in _upstreams(gateway) if u["in_flight"])
            victim = next(e for e in own_engines if e.url == busy)
            os.kill(victim.process.pid, signal.SIGKILL)
            results = [answer.result() for answer in answers]
        for content, reason, started in results:
            # A request that failed before its first token went to another upstream; only
            # one that had started streaming may end with an error.
            assert reason in ("stop", "length") or (reason == "error" and started), content
        state = {u["url"]: u for u in _upstreams(gateway)}
        assert not state[victim.url]["healthy"]
        # What comes next is served by the two left.
        after = [_stream(gateway, _body(_editor_prompt(400 + i))) for i in range(4)]
        assert all(reason in ("stop", "length") for _, reason, _ in after)
    finally:
        stop_server(gateway)


def test_a_hung_upstream_is_ejected_its_requests_go_elsewhere_and_it_comes_back(
    own_engines: list[EngineServer],
) -> None:
    gateway = start_server("upstream-hung", *upstream_args(own_engines), env=FAST_HEALTH)
    hung = own_engines[1]
    try:
        os.kill(hung.process.pid, signal.SIGSTOP)  # alive, listening, answering nothing
        # Sent at once: the editors whose affinity is the hung upstream wait until the
        # health check ejects it, then go to another, before any token was sent.
        bodies = [_body(_editor_prompt(500 + i)) for i in range(6)]
        with ThreadPoolExecutor(len(bodies)) as pool:
            results = list(pool.map(lambda b: _stream(gateway, b), bodies))
        assert all(reason in ("stop", "length") for _, reason, _ in results)
        assert not {u["url"]: u for u in _upstreams(gateway)}[hung.url]["healthy"]
        assert httpx.get(f"{gateway.url}/health").json()["models"]["qwen2.5-coder-0.5b"]["ejected"]
        os.kill(hung.process.pid, signal.SIGCONT)
        _until(
            lambda: {u["url"]: u for u in _upstreams(gateway)}[hung.url]["healthy"],
            "the upstream taken back",
        )
    finally:
        os.kill(hung.process.pid, signal.SIGCONT)
        stop_server(gateway)


def test_an_upstream_down_at_start_joins_when_it_answers(
    engine_servers: list[EngineServer],
) -> None:
    late_port = free_port()
    late_url = f"http://127.0.0.1:{late_port}"
    args = ["--upstream", engine_servers[0].url, "--upstream", late_url]
    gateway = start_server("upstream-late", *args, env=FAST_HEALTH)
    late = None
    try:
        # Served from the one that answers; the other is out, not an error.
        assert _stream(gateway, _body(_editor_prompt(800)))[1] in ("stop", "length")
        assert not {u["url"]: u for u in _upstreams(gateway)}[late_url]["healthy"]
        late = start_engine_server("late-engine", late_port)
        _until(lambda: {u["url"]: u for u in _upstreams(gateway)}[late_url]["healthy"], "joined")
        for i in range(16):  # editors spread over both by their affinity
            with gateway.client() as c:
                assert c.post(URL, json=_body(_editor_prompt(900 + i), max_tokens=2)).is_success
        assert {u["url"]: u for u in _upstreams(gateway)}[late_url]["requests"] > 0
    finally:
        stop_server(gateway)
        if late is not None:
            stop(late.process)


def test_one_busy_editor_does_not_pin_its_upstream(engine_servers: list[EngineServer]) -> None:
    """Three requests at once from one editor and file (one affinity): the first two fill
    the two slots of its upstream, the third goes to the next one instead of queueing."""
    gateway = start_server("upstream-busy", *upstream_args(engine_servers))
    # Long enough to still run while the others arrive: min_tokens keeps each going.
    body = _body(_editor_prompt(950), suffix="", max_tokens=300, min_tokens=300)
    try:
        with ThreadPoolExecutor(3) as pool:
            running = [pool.submit(_stream, gateway, body) for _ in range(3)]
            in_flight = lambda: sorted(u["in_flight"] for u in _upstreams(gateway))  # noqa: E731
            _until(lambda: sum(in_flight()) == 3, "three requests in flight")
            assert in_flight() == [0, 1, 2]
            assert all(r.result()[1] == "length" for r in running)
    finally:
        stop_server(gateway)


def _typing(gateway: Server, tag: str) -> int:
    """Three editors typing four keystrokes each into a file of their own; the prompt tokens
    the upstreams computed for it (the rest came from their caches)."""
    before = gateway.stats()["prompt_tokens_computed"]
    for editor in range(3):
        body = "".join(
            f"def {tag}_{editor}_{n}(value: int) -> int:\n    return value * {n} + {editor}\n\n"
            for n in range(12)
        )
        for typed in ("def ", "def ma", "def main", "def main("):
            with gateway.client() as c:
                assert c.post(URL, json=_body(body + typed, max_tokens=2)).status_code == 200
    return gateway.stats()["prompt_tokens_computed"] - before


def test_affinity_computes_fewer_prompt_tokens_than_round_robin(
    engine_servers: list[EngineServer],
) -> None:
    no_suggestions = {"FIMGATE_SUGGESTIONS": "false"}  # every keystroke goes to an upstream
    computed = {}
    for policy in ("affinity", "round-robin"):
        env = {**no_suggestions, "FIMGATE_ROUTING": policy}
        gateway = start_server(f"upstream-{policy}", *upstream_args(engine_servers), env=env)
        try:
            computed[policy] = _typing(gateway, policy.replace("-", "_"))
        finally:
            stop_server(gateway)
    assert 0 < computed["affinity"] < computed["round-robin"], computed


def _backends(path: Path, engines: list[EngineServer], drained: str = "") -> None:
    """A backends file for the test model on ``engines``; ``drained``: that one drains."""
    lines = ['[[model]]\nname = "qwen2.5-coder-0.5b"\n']
    for engine in engines:
        drain = "true" if engine.url == drained else "false"
        lines.append(f'[[model.upstream]]\nurl = "{engine.url}"\ndrain = {drain}\n')
    path.write_text("\n".join(lines))


def test_a_drained_upstream_finishes_its_work_and_takes_no_more(
    engine_servers: list[EngineServer], tmp_path: Path
) -> None:
    backends = tmp_path / "backends.toml"
    _backends(backends, engine_servers)
    gateway = start_server("upstream-drain", "--backends-file", str(backends), env=FAST_HEALTH)
    try:
        long = _body(_editor_prompt(600), suffix="", max_tokens=48)
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(_stream, gateway, long)
            _until(lambda: any(u["in_flight"] for u in _upstreams(gateway)), "a busy upstream")
            drained = next(u["url"] for u in _upstreams(gateway) if u["in_flight"])
            _backends(backends, engine_servers, drained)
            state = lambda: {u["url"]: u for u in _upstreams(gateway)}[drained]  # noqa: E731
            _until(lambda: state()["draining"], "the edit applied")
            assert running.result()[1] in ("stop", "length")  # what it had, it finished
        taken = state()["requests"]
        for i in range(6):
            assert _stream(gateway, _body(_editor_prompt(700 + i)))[1] in ("stop", "length")
        assert state()["requests"] == taken and state()["healthy"]
    finally:
        stop_server(gateway)
