"""Who goes when inside llama.cpp: the requests in flight, and a rule editor traffic needs
that llama.cpp's own scheduling lacks.

A request reading a long prompt steps out between two batches for requests that wait:
llama.cpp fills each batch slot by slot in slot order, so a long prompt in a lower slot takes
every batch until it is read, and a keystroke's request in a higher slot would wait for all
of it (seconds per batch on 2 cores). (The other rule, that an editor's next keystroke waits
for its cancelled request to let go of its slot, is the editor's turn: engines/sessions.py.)
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

# How long a request that stepped out waits for the ones it made way for to start reading.
YIELD_WAIT_S = 10.0


@dataclass(eq=False)
class Flight:
    """A request inside llama.cpp: its prompt, whether it was cancelled, and whether llama.cpp
    has started on it (one not started yet is waiting for its turn)."""

    ids: list[int]
    cancel: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    chat: bool = False  # a chat answer: it steps out for keystrokes (transports/chat_run.py)
    answering: threading.Event = field(default_factory=threading.Event)  # its first token came

    def waiting(self) -> bool:
        return not self.started.is_set() and not self.cancel.is_set()


class Flights:
    """The requests inside llama.cpp, for an engine with ``n_parallel`` slots."""

    def __init__(self, n_parallel: int, n_batch: int) -> None:
        self._n_parallel = n_parallel
        self._n_batch = n_batch
        self._all: set[Flight] = set()

    def add(self, flight: Flight) -> None:
        self._all.add(flight)

    def leave(self, flight: Flight) -> None:
        self._all.discard(flight)

    def waiting_behind(self, flight: Flight, progress: dict[str, int]) -> list[Flight]:
        """The requests ``flight``, reading its prompt, should step out for (often none).

        ``progress`` is llama.cpp's prompt_progress report after one of its batches. Only when
        this submission has read a batch (so each one makes progress), when each waiting
        request has a slot of its own (no more requests than slots: otherwise it would take
        ours) and when more than a batch is left to read.
        """
        if progress["processed"] <= progress["cache"]:
            return []
        if len(self._all) > self._n_parallel:
            return []
        if progress["total"] - progress["processed"] <= self._n_batch:
            return []
        # Never for a chat answer: it is the one that steps out (keystrokes first).
        return [o for o in list(self._all) if o is not flight and o.waiting() and not o.chat]

    def keystrokes(self) -> bool:
        """Whether a completion (not a chat answer) waits for its first token: what the
        person typing waits for."""
        return any(
            not f.chat and not f.cancel.is_set() and not f.answering.is_set()
            for f in list(self._all)
        )

    @staticmethod
    def wait_started(flights: list[Flight]) -> None:
        """Block (worker thread) until ``flights`` started reading, were cancelled, or a while
        passed: a request that stepped out and is submitted again at once would be back in
        its slot before they get a batch."""
        deadline = time.monotonic() + YIELD_WAIT_S
        while any(f.waiting() for f in flights) and time.monotonic() < deadline:
            time.sleep(0.005)


def computed_over(reads: Sequence[Sequence[int]]) -> int:
    """Prompt tokens a request had llama.cpp compute over its submissions, given each one's
    (tokens found cached, tokens computed as reported).

    A submission that stepped out computed one more batch after its last report; the next
    one's cache shows what it left (if that KV was lost, count what was reported).
    """
    total = 0
    for (cache, computed), (next_cache, _) in itertools.pairwise(reads):
        total += next_cache - cache if next_cache > cache else computed
    return total + (reads[-1][1] if reads else 0)
