"""The editor session store (engines/sessions.py): one memory per editor, never shared,
bounded in count and age, and the one hand-off between a cancelled request and the next."""

from __future__ import annotations

import asyncio

import pytest

from fimgate.engines.base import Editor
from fimgate.engines.sessions import EditorSessions, Turn
from tests.clock import Clock

pytestmark = pytest.mark.fast


def test_each_editor_has_its_own_memory() -> None:
    sessions = EditorSessions()
    mine = Editor("k1", "m")
    sessions.memory(mine).shown = "mine"
    for other in (Editor("k2", "m"), Editor("k1", "other"), Editor("k1", "m", "session-2")):
        assert sessions.memory(other).shown is None
    assert sessions.memory(mine).shown == "mine"


def test_the_least_recent_editor_is_forgotten_past_the_bound() -> None:
    sessions = EditorSessions(editors=2)
    a, b, c = (Editor(k, "m") for k in "abc")
    sessions.memory(a).shown = "a"
    sessions.memory(b).shown = "b"
    sessions.memory(a)  # a is used again: b is now the least recent
    sessions.memory(c).shown = "c"
    assert len(sessions) == 2
    assert sessions.memory(a).shown == "a" and sessions.memory(b).shown is None


def test_an_idle_editor_is_forgotten_after_its_age() -> None:
    clock = Clock()
    sessions = EditorSessions(ttl=600, clock=clock)
    editor = Editor("k", "m")
    sessions.memory(editor).shown = "x"
    clock.now = 599
    assert sessions.memory(editor).shown == "x"  # its age starts again at each use
    clock.now = 599 + 600
    assert sessions.memory(editor).shown is None
    assert sessions.horizon() == clock.now - 600


@pytest.mark.anyio
async def test_the_next_turn_waits_only_for_a_cancelled_one_still_stopping() -> None:
    sessions = EditorSessions()
    editor = Editor("k", "m")
    first = await sessions.take_turn(editor, "a.py")
    first.hold()  # running, not cancelled: the next one does not wait for it
    second = await sessions.take_turn(editor, "a.py")
    second.hold()
    second.stop()  # cancelled, llama.cpp still stopping
    elsewhere = await sessions.take_turn(editor, "b.py")  # another file: no wait
    assert elsewhere is not second
    waiting = asyncio.create_task(sessions.take_turn(editor, "a.py"))
    for _ in range(50):
        await asyncio.sleep(0)
    assert not waiting.done()
    second.let_go()
    third = await waiting
    assert isinstance(third, Turn) and not third.held


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
