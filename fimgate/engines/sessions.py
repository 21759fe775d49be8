"""What an editor leaves behind between its requests, in one store bounded in count and age.

An editor is an API key on a model, and the client's own session id where its wire carries
one (without it, a team that shares a key is one editor). What it leaves:

- the prefixes it sent lately: ``window_recall`` puts back the lines its window dropped;
- the greedy suggestions it got lately: ``suggestions`` gives the rest of one typed along;
- the files it showed, chunked, per key (``context_memory``: a prompt gets chunks of other
  files back; it alone may be shared, within a workspace that asks for it);
- the last completion it was shown, which its next prompt judges (gateway/acceptance.py
  keeps it here, as its own record);
- each file's turn in the engine: the one hand-off for a cancelled request. An editor's
  next keystroke usually arrives as its last request is being cancelled; sent on at once it
  would find that request's llama.cpp slot still busy, land in another and read its whole
  prompt cold (seconds). So it waits until the cancelled one has let go of the engine (its
  transport says when: in-process, llama.cpp stopped; upstream, the server's slot is free).

Nothing else here crosses editors: a prompt only ever gets back text the same editor sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache, TTLCache

from fimgate.engines.base import Editor
from fimgate.engines.context_memory import ContextMemory

if TYPE_CHECKING:  # the records are theirs; the store only keeps them
    from fimgate.engines.suggestions import Suggestion
    from fimgate.engines.window_recall import Remembered

EDITORS = 1024
TTL_S = 600.0  # an editor idle this long is forgotten, and so is each thing it left
FILES = 16  # files an editor (or a team sharing a key) has open
# The longest a request waits for the cancelled one before it to let go (it stops within a
# token in-process; an upstream's slot is let go between two of its batches).
HANDOFF_WAIT_S = 10.0


class Turn:
    """One request's time in the engine, for one editor's file. Its transport holds it while
    it runs and lets go when that work has really ended."""

    def __init__(self) -> None:
        self._free = asyncio.Event()
        self._free.set()  # nothing held yet: a request refused before the engine blocks none
        self.stopping = False  # closed before its end (the client left)

    def hold(self) -> None:
        self._free.clear()

    def stop(self) -> None:
        self.stopping = True

    def let_go(self) -> None:
        self._free.set()

    @property
    def held(self) -> bool:
        return not self._free.is_set()

    async def let_go_of(self) -> None:
        """Returns once this turn's work has let go of the engine."""
        await self._free.wait()


@dataclass
class EditorMemory:
    """One editor's: kept lists are most recent first."""

    prefixes: list[Remembered] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    shown: Any = None  # acceptance's record of the completion last shown
    turns: LRUCache[str, Turn] = field(default_factory=lambda: LRUCache(FILES))


class EditorSessions:
    """Every editor's memory: at most ``editors`` of them, each forgotten ``ttl`` seconds
    after its last request. ``clock`` is for tests."""

    def __init__(
        self,
        editors: int = EDITORS,
        ttl: float = TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.ttl = ttl
        self._editors: TTLCache[Editor, EditorMemory] = TTLCache(editors, ttl, timer=clock)
        self.context = ContextMemory(clock=clock)
        self.typed_at = -math.inf  # when the last completion request came: a keystroke

    def typing(self, within: float) -> bool:
        """Whether any editor asked for a completion in the last ``within`` seconds (a chat
        steps out meanwhile: transports/chat_run.py)."""
        return self.clock() - self.typed_at < within

    def __len__(self) -> int:
        return len(self._editors)

    def horizon(self) -> float:
        """What an editor left before this moment is forgotten."""
        return self.clock() - self.ttl

    def memory(self, editor: Editor) -> EditorMemory:
        """The editor's memory (new if it had none); its age starts again."""
        memory = self._editors.pop(editor, None) or EditorMemory()
        self._editors[editor] = memory
        return memory

    async def take_turn(self, editor: Editor, place: str) -> Turn:
        """The next turn on ``editor``'s file ``place``, after the request before it there, if
        it was cancelled and is still stopping, has let go (``HANDOFF_WAIT_S`` at most)."""
        self.typed_at = self.clock()
        turns = self.memory(editor).turns
        before = turns.get(place)
        if before is not None and before.stopping and before.held:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HANDOFF_WAIT_S):
                    await before.let_go_of()
        turns[place] = turn = Turn()
        return turn
