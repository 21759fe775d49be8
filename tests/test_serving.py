"""Serving editor traffic: prefix reuse is exact, a cancelled keystroke frees its slot for the
next one, a long prompt does not hold short requests back, the prompt budget and the time bound
per completion. Behaviour, read from /health's counters and the answers, never timings."""

from __future__ import annotations

import sysconfig
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fimgate.engines.typed_middle import MAX_TAKEN
from tests.conftest import Server, start_server, stop_server
from tests.test_generation import URL, _lines, _wait_idle

# Real code: the middle of a standard-library file, as an editor would send it.
SOURCE = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text()
CURSOR = SOURCE.index("    def _wrap_chunks(")
PREFIX, SUFFIX = SOURCE[CURSOR - 1500 : CURSOR], SOURCE[CURSOR : CURSOR + 400]


# A prompt read afresh: all of it but the leading FIM marker (every prompt starts with it),
# the typed tokens taken back to be generated again, and a token of slack where the typed
# text is split off (typed_middle.py).
ALL_BUT = 1 + MAX_TAKEN + 1


def fim(client: httpx.Client, prefix: str, suffix: str = SUFFIX, **body) -> dict:
    body = {"model": "codestral-latest", "prompt": prefix, "suffix": suffix, **body}
    response = client.post(URL, json={"max_tokens": 12, "temperature": 0, **body})
    assert response.status_code == 200, response.text
    return response.json()


def text_of(result: dict) -> str:
    return result["choices"][0]["message"]["content"]


def computed(server: Server, send) -> tuple[dict, int]:
    """Run ``send()``; returns its result and the prompt tokens the engine had to compute."""
    before = _wait_idle(server)["prompt_tokens_computed"]
    result = send()
    return result, _wait_idle(server)["prompt_tokens_computed"] - before


@pytest.fixture(scope="module")
def one_slot() -> Iterator[Server]:
    """One slot and no RAM cache: a prompt is cached only while it is the latest one."""
    env = {
        "FIMGATE_CACHE_RAM_MIB": "0",
        "FIMGATE_MAX_PREFIX_TOKENS": "600",
        "FIMGATE_MAX_SUFFIX_TOKENS": "48",
        # What the cache reads is under test: a keystroke that types along the suggestion
        # before would be answered from it, reading nothing (tests/test_suggestions.py).
        "FIMGATE_SUGGESTIONS": "false",
    }
    srv = start_server("one-slot", "--n-ctx", "2048", "--parallel", "1", env=env)
    yield srv
    stop_server(srv)


def test_reused_prefix_gives_the_same_tokens_as_a_cold_run(one_slot: Server) -> None:
    with one_slot.client() as c:
        for typed in ("    def _wr", "    def _wrap_ch", "    def _wrap_chunks(self, ch"):
            prompt = PREFIX + typed
            fim(c, SOURCE[:1500])  # evicts it: the next run is cold
            cold, cold_computed = computed(one_slot, lambda p=prompt: fim(c, p))
            fim(c, PREFIX)  # the keystroke before: the next run reuses its prefix
            warm, warm_computed = computed(one_slot, lambda p=prompt: fim(c, p))
            assert cold_computed >= cold["usage"]["prompt_tokens"] - ALL_BUT
            assert warm_computed < cold_computed // 4, (warm_computed, cold_computed)
            assert text_of(warm) == text_of(cold), typed
            assert warm["usage"] == cold["usage"]


def test_a_keystroke_reads_only_what_was_typed(one_slot: Server) -> None:
    """The typed text goes at the middle's start (typed_middle.py): the suffix behind the
    cursor stays cached, and a keystroke reads the new characters, not the suffix again."""
    with one_slot.client() as c:
        fim(c, PREFIX + "    def _wr")
        _, typed_computed = computed(one_slot, lambda: fim(c, PREFIX + "    def _wrap_c"))
    assert typed_computed < 8, typed_computed  # the suffix alone is 48 tokens


def test_prompt_budget_caps_prefix_and_suffix_in_tokens(one_slot: Server) -> None:
    with one_slot.client() as c:
        capped = fim(c, SOURCE[:8000], SOURCE[8000:12000], max_tokens=1)
        small = fim(c, "x = 1\n", "y = 2\n", max_tokens=1)
    # 600 + 48 tokens of text at most, plus the three FIM markers.
    assert 600 - 256 < capped["usage"]["prompt_tokens"] <= 600 + 48 + 3
    assert small["usage"]["prompt_tokens"] < 20


def test_prefix_cap_keeps_the_cache_while_typing(one_slot: Server) -> None:
    """The cut prefix starts at the same token keystroke after keystroke (block-wise cut)."""
    long = SOURCE[CURSOR - 6000 : CURSOR]
    with one_slot.client() as c:
        fim(c, long)
        _, typed_computed = computed(one_slot, lambda: fim(c, long + "    de"))
    assert typed_computed < 100, typed_computed


def test_lines_the_window_dropped_are_put_back_for_the_same_key_only(one_slot: Server) -> None:
    """An editor's window moves down as the user types: lines leave the top of the prefix.
    Its next prompt still reads only what was typed, and is charged only for what it sent;
    another key sending the same window gets nothing of the first key's text."""
    first_lines = PREFIX.index("\n", PREFIX.index("\n") + 1) + 1
    moved = PREFIX[first_lines:] + "    def _wr"
    other = one_slot.cli("keys", "create", "-w", "default").strip()
    with one_slot.client() as c, one_slot.client(other) as c2:
        fim(c, PREFIX)
        mine, mine_computed = computed(one_slot, lambda: fim(c, moved))
        fim(c2, SOURCE[:1500])  # not the prompt the slot holds: the next run starts afresh
        theirs, theirs_computed = computed(one_slot, lambda: fim(c2, moved))
    # Only the typed text and the suffix behind it (48 tokens here) are read again.
    assert mine_computed < 48 + 16, mine_computed
    assert theirs_computed >= theirs["usage"]["prompt_tokens"] - ALL_BUT > 4 * mine_computed
    assert mine["usage"] == theirs["usage"]


@pytest.fixture(scope="module")
def bounded() -> Iterator[Server]:
    """A deployment that asks for a time bound. Only here: anywhere else a bound would make
    what a test gets depend on how busy the machine is."""
    srv = start_server(
        "bounded", "--n-ctx", "2048", "--parallel", "1", env={"FIMGATE_MAX_PREDICT_MS": "500"}
    )
    yield srv
    stop_server(srv)


def test_time_bound_ends_a_long_completion_with_length(bounded: Server) -> None:
    with bounded.client() as c:
        result = fim(c, "numbers = [\n    1,\n    2,\n", "", max_tokens=400)
    assert result["choices"][0]["finish_reason"] == "length"
    assert 0 < result["usage"]["completion_tokens"] < 400
    assert text_of(result).count("\n") >= 1  # only a completed line ends it


def test_cancelled_keystroke_frees_its_slot_for_the_next_one(server: Server) -> None:
    """An editor cancels a completion and sends the next keystroke at once: the new request
    gets the slot the cancelled one held, with its cache, instead of reading cold."""
    prefix = PREFIX + f"# {uuid.uuid4().hex}\n"
    with server.client() as c:
        fim(c, prefix)
        body = {"model": "codestral-latest", "prompt": prefix + "    d", "suffix": SUFFIX,
                "stream": True, "max_tokens": 300, "min_tokens": 300}  # fmt: skip
        before = _wait_idle(server)
        with c.stream("POST", URL, json=body) as response:
            for chunk in _lines(response):
                if chunk["choices"][0]["delta"]["content"]:
                    break  # the user typed on
        result = fim(c, prefix + "    de")
        after = _wait_idle(server)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["generated_tokens"] - before["generated_tokens"] < 40  # not 300
    fresh = after["prompt_tokens_computed"] - before["prompt_tokens_computed"]
    assert fresh < result["usage"]["prompt_tokens"] // 2, fresh


@pytest.fixture(scope="module")
def two_slots() -> Iterator[Server]:
    """A fresh server with two slots, so the slot each request lands in is known per run."""
    srv = start_server("two-slots", "--n-ctx", "4096", "--parallel", "2")
    yield srv
    stop_server(srv)


@pytest.mark.parametrize("run", ["first", "second (slots swapped)"])
def test_long_prompt_does_not_hold_short_requests_back(two_slots: Server, run: str) -> None:
    """A short request sent while a ~1,400-token prompt is being read (six batches of 256) is
    answered before that prompt's first token, whichever slot each lands in.

    llama.cpp fills a batch slot by slot, so a long prompt in the lower slot would fill every
    batch until read. The two runs put the long prompt in one slot, then (least recently used
    first) in the other, so one of them has it in the lower slot: there the engine makes the
    long one step out for the short one.
    """
    server = two_slots
    events: list[str] = []
    long_prompt = f"# {uuid.uuid4().hex}\n" + SOURCE[:5600]  # uncached

    def long() -> None:
        body = {"model": "codestral-latest", "prompt": long_prompt, "suffix": "",
                "stream": True, "max_tokens": 2}  # fmt: skip
        with server.client() as c, c.stream("POST", URL, json=body) as response:
            for chunk in _lines(response):
                choice = chunk["choices"][0]
                if choice["delta"]["content"] or choice["finish_reason"]:
                    events.append("long: first token")
                    break

    before = _wait_idle(server)
    worker = threading.Thread(target=long)
    worker.start()
    deadline = time.monotonic() + 30
    while server.stats()["prompt_tokens_sent"] == before["prompt_tokens_sent"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)  # until the long prompt is inside the engine
    with server.client() as c:
        fim(c, "def add(a, b):\n    ", "\n", max_tokens=1)
    events.append("short: done")
    worker.join()
    assert events == ["short: done", "long: first token"]
    # Stepping out loses nothing: the long prompt was read once, not again from the start.
    after = _wait_idle(server)
    assert after["prompt_tokens_computed"] - before["prompt_tokens_computed"] < 1500
