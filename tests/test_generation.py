"""Generation semantics through the HTTP API: stop, min_tokens, seeds, context, concurrency,
and cancellation when the client goes away."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from fimgate import modelpack
from tests.conftest import DATA_DIR, TEST_MODEL, Server, start_server, stop_server

URL = "/mistral/eu/v1/fim/completions"
PREFIX = "def fibonacci(n):\n    "
SUFFIX = "\n\nprint(fibonacci(10))\n"


def complete(http: httpx.Client, **body) -> dict:
    body = {"model": "codestral-latest", "prompt": PREFIX, "suffix": SUFFIX, **body}
    response = http.post(URL, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def text_of(result: dict) -> str:
    return result["choices"][0]["message"]["content"]


def test_stop_ends_generation_and_is_not_returned(http: httpx.Client) -> None:
    free = text_of(complete(http, max_tokens=24, temperature=0))
    assert "\n" in free  # without a stop the model writes several lines
    result = complete(http, max_tokens=24, temperature=0, stop=["\n"])
    assert text_of(result) == free.split("\n")[0]
    assert result["choices"][0]["finish_reason"] == "stop"
    multi = complete(http, max_tokens=24, temperature=0, stop=["never", " <= "])
    assert text_of(multi) == free.split(" <= ")[0]


def test_completion_ends_where_the_suffix_is_typed_again(http: httpx.Client) -> None:
    """Left alone, the 0.5B writes the function, then the suffix again with a comment
    (``print(fibonacci(10))  # Output: 55``), then a code fence and chat. The completion ends
    before the suffix, streamed or not, and generation stops there."""
    result = complete(http, max_tokens=200, temperature=0)
    text = text_of(result)
    assert "return" in text and "print(" not in text and "```" not in text, text
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"]["completion_tokens"] < 200
    body = {"model": "codestral-latest", "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 200,
            "temperature": 0, "stream": True}  # fmt: skip
    with http.stream("POST", URL, json=body) as response:
        pieces = [c["choices"][0]["delta"]["content"] for c in _lines(response) if c["choices"]]
    assert "".join(pieces) == text


def test_a_cursor_inside_a_word_gets_the_rest_of_it(http: httpx.Client) -> None:
    """The typed text's last token is taken back and generated again (typed_middle.py): the
    completion goes on from the cursor, never repeats what was typed, streamed or not."""
    prefix = "def fibonacci(n):\n    if n <= 1:\n        return n\n    return fibonacci(n - 1)"
    prefix += " + fibon"  # " fibonacci" is one token: " fib" + "on" is not how it is written
    body = {"prompt": prefix, "max_tokens": 8, "temperature": 0, "stop": ["\n"]}
    text = text_of(complete(http, **body))
    assert text.startswith("acci(n - 2)"), text
    with http.stream("POST", URL, json={"model": "codestral-latest", "suffix": SUFFIX,
                                        "stream": True, **body}) as response:  # fmt: skip
        pieces = [c["choices"][0]["delta"]["content"] for c in _lines(response) if c["choices"]]
    assert "".join(pieces) == text


def test_min_tokens_suppresses_the_end(http: httpx.Client) -> None:
    # The function is already complete: the model ends at once unless told otherwise.
    body = dict(prompt="def add(a, b):\n    return a + b\n", suffix="", temperature=0)
    short = complete(http, max_tokens=30, **body)
    assert short["choices"][0]["finish_reason"] == "stop"
    n = short["usage"]["completion_tokens"] + 8
    forced = complete(http, max_tokens=30, min_tokens=n, **body)
    assert forced["usage"]["completion_tokens"] >= n


def test_random_seed_makes_sampling_reproducible(http: httpx.Client) -> None:
    a = complete(http, max_tokens=16, temperature=1.2, random_seed=1234)
    b = complete(http, max_tokens=16, temperature=1.2, random_seed=1234)
    assert text_of(a) == text_of(b)


def test_fim_markers_in_user_text_are_plain_text(http: httpx.Client) -> None:
    # Parsed as special tokens, the marker would add a token and end the "prefix".
    plain = complete(http, prompt="x = 'a'\n", suffix="", max_tokens=1)
    marked = complete(http, prompt="x = '<|fim_middle|>'\n", suffix="", max_tokens=1)
    assert marked["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 3


def test_concurrent_requests_are_all_served_and_loop_stays_free(server: Server) -> None:
    """Four generations run at once, and the event loop answers /health while they do.

    No sleep decides it: each request is held running by min_tokens (400 tokens), the test
    reads /health until the engine reports all four running (that answer is the proof: the
    loop served it during the four generations), then ends them by disconnecting."""
    _wait_idle(server)
    done = threading.Event()
    statuses = [0] * 4
    tokens = [0] * 4

    def one(i: int) -> None:
        body = {**LONG, "prompt": f"# task {i}\n" + PREFIX, "stream": True}
        with server.client() as c, c.stream("POST", URL, json=body) as response:
            statuses[i] = response.status_code
            for chunk in _lines(response):
                tokens[i] += bool(chunk["choices"] and chunk["choices"][0]["delta"]["content"])
                if done.is_set() and tokens[i]:
                    return  # closing the stream cancels the generation

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    running: dict[str, int] | None = None
    seen: list[int] = []
    try:
        # Ends when all four run, or when a request ended by itself (an error, or 400 tokens
        # generated before the four ever ran together): then the assertion below says so.
        while all(t.is_alive() for t in threads):
            stats = server.stats()  # /health: answered by the event loop
            seen.append(stats["active"])
            if stats["active"] == 4:
                running = stats
                break
            time.sleep(0.02)  # only spares the CPU: the loop waits for an event, not a time
        assert running is not None, f"never four at once: active {seen}, HTTP {statuses}"
    finally:
        done.set()
        for t in threads:
            t.join(timeout=240)
    assert statuses == [200] * 4
    assert all(n > 0 for n in tokens), tokens
    _wait_idle(server)


def _wait_idle(server: Server) -> dict[str, int]:
    """The engine's counters once it runs nothing (however long that takes on this machine:
    pytest's timeout bounds a test that hangs)."""
    while (stats := server.stats())["active"]:
        time.sleep(0.05)
    return stats


# A request that would run for half a minute: min_tokens keeps the model from ending early.
LONG = {
    "model": "codestral-latest",
    "prompt": PREFIX,
    "suffix": SUFFIX,
    "max_tokens": 400,
    "min_tokens": 400,
}


def _lines(response: httpx.Response) -> Iterator[dict]:
    for line in response.iter_lines():
        if line.startswith("data: {"):
            yield json.loads(line[len("data: ") :])


def test_stream_disconnect_stops_generation(server: Server) -> None:
    before = _wait_idle(server)
    body = {**LONG, "stream": True}
    with server.client() as c, c.stream("POST", URL, json=body) as response:
        assert response.status_code == 200
        got = 0
        for chunk in _lines(response):
            got += bool(chunk["choices"][0]["delta"]["content"])
            if got == 3:
                break
    after = _wait_idle(server)
    assert after["cancelled"] == before["cancelled"] + 1
    generated = after["generated_tokens"] - before["generated_tokens"]
    assert generated < LONG["max_tokens"], generated  # stopped at the close, not run to its end


def test_non_stream_disconnect_stops_generation(server: Server) -> None:
    """A non-streamed request whose client leaves mid-generation is cancelled at once. The
    request goes on a raw socket, so that the test closes the connection itself, once the
    engine reports it generating, rather than after a timeout."""
    before = _wait_idle(server)
    body = json.dumps(LONG).encode()
    url = httpx.URL(server.url)
    head = (
        f"POST {URL} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        f"Authorization: Bearer {server.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((url.host, url.port)) as sock:
        sock.sendall(head + body)
        while True:
            stats = server.stats()
            if stats["active"] == 1 and stats["generated_tokens"] > before["generated_tokens"]:
                break  # generating, its 400 tokens still far off
            # An answer already (an error; or all 400 tokens) is a failure, not a wait.
            answered, _, _ = select.select([sock], [], [], 0.02)  # also spares the CPU
            assert not answered, sock.recv(65536).decode(errors="replace")
        at_close = server.stats()["generated_tokens"] - before["generated_tokens"]
    after = _wait_idle(server)
    assert after["cancelled"] == before["cancelled"] + 1
    generated = after["generated_tokens"] - before["generated_tokens"]
    assert at_close <= generated < LONG["max_tokens"], (at_close, generated)  # stopped


def test_a_busy_server_gives_the_completion_an_idle_one_would(server: Server) -> None:
    """No wall-clock rule changes what a request gets: the same greedy completion, ended by
    the model (not cut short), whether it runs alone or beside three long generations."""
    # A first line of its own, so that the idle run reads its whole prompt whatever earlier
    # tests left in the cache (a prompt read in other pieces may tip a near tie: the
    # exception the load bench counts, bench/load_independence.py); the busy run then reads
    # the same cached prompt beside the three others.
    body = {"model": "codestral-latest", "prompt": "# idle or busy\n" + PREFIX,
            "suffix": SUFFIX, "max_tokens": 200, "temperature": 0}  # fmt: skip
    _wait_idle(server)
    with server.client() as c:
        idle = c.post(URL, json=body).json()
    assert idle["choices"][0]["finish_reason"] == "stop"
    started = threading.Barrier(4)
    done = threading.Event()

    def hog(i: int) -> None:
        hog_body = {**LONG, "prompt": f"# worker {i}\n" + PREFIX, "stream": True}
        with server.client() as c, c.stream("POST", URL, json=hog_body) as response:
            for n, _ in enumerate(response.iter_lines()):
                if n == 2:  # generating, not just reading its prompt
                    started.wait(timeout=120)
                if done.is_set():
                    return

    hogs = [threading.Thread(target=hog, args=(i,)) for i in range(3)]
    for t in hogs:
        t.start()
    try:
        started.wait(timeout=120)
        assert server.stats()["active"] == 3
        with server.client() as c:
            busy = c.post(URL, json=body).json()
    finally:
        done.set()
        for t in hogs:
            t.join(timeout=60)
    assert text_of(busy) == text_of(idle)
    assert busy["choices"][0]["finish_reason"] == "stop"
    assert busy["usage"] == idle["usage"]


def test_next_request_after_cancel_is_served(http: httpx.Client) -> None:
    assert complete(http, max_tokens=4)["usage"]["completion_tokens"] > 0


@pytest.fixture(scope="module")
def small_ctx() -> Iterator[Server]:
    srv = start_server("small-ctx", "--n-ctx", "256", "--parallel", "1")
    yield srv
    stop_server(srv)


def test_prompt_over_context_is_a_clear_400(small_ctx: Server) -> None:
    with small_ctx.client() as c:
        response = c.post(URL, json={"model": "codestral-latest", "prompt": "x = 1\n" * 200})
    assert response.status_code == 400
    err = response.json()
    assert err["code"] == "context_length_exceeded"
    assert "256" in err["message"]


def test_full_context_finishes_with_model_length(small_ctx: Server) -> None:
    with small_ctx.client() as c:
        result = complete(c, prompt="x = 1\n" * 40, suffix="", max_tokens=1000, min_tokens=1000)
    used = result["usage"]["prompt_tokens"] + result["usage"]["completion_tokens"]
    assert result["choices"][0]["finish_reason"] == "model_length"
    assert used == 256


def test_packaged_test_model_is_assembled_and_verified(server) -> None:
    # The server fixture assembled it from the installed parts; verify from scratch.
    model = modelpack.PACKAGED_MODELS[TEST_MODEL]
    path = modelpack.model_path(model, DATA_DIR)
    assert modelpack.sha256_of(path) == model.sha256
