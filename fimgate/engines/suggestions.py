"""When the user types what was just suggested, the suggestion goes on.

An editor asks again at almost every pause in typing. When the characters typed since an
earlier request are the start of what the model suggested then, greedy decoding has already
said what comes next: the rest of that suggestion. The answer is that rest, sent at once,
and then, where the suggestion had been cut short (the client left, ``max_tokens``),
generation goes on from its end: the earlier prompt and every token of the suggestion are
still in llama.cpp's cache, so nothing is read again, the suffix included. In the keystroke
replay the 0.5B's suggestion holds for about 7 keystrokes in 10.

Continue does the same on the client, but only while the stream is still open; here it holds
across requests. Only for greedy requests (at temperature 0 the earlier answer is the answer)
whose suffix, editor context, stop strings and penalties are those of the suggestion, and
never across API keys.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from fimgate.engines.base import FimJob

PER_EDITOR = 8  # files an editor has open
EDITORS = 256
TTL_S = 600.0


@dataclass(frozen=True)
class Made:
    """What a suggestion was made for: a later request must agree on all of it."""

    suffix: str
    context: tuple[int, ...]
    stop: tuple[str, ...]
    penalties: tuple[float, float]

    @classmethod
    def of(cls, job: FimJob, suffix: str, context: list[int]) -> Made:
        return cls(suffix, tuple(context), job.stop, (job.frequency_penalty, job.presence_penalty))


@dataclass(eq=False)
class Suggestion:
    """A greedy completion of ``prefix``: its prompt as run, and the text generated so far."""

    made: Made
    prefix: str  # the current file's prefix as laid out (lines put back included)
    prompt_ids: list[int]
    text: str = ""  # what the model wrote after ``prefix``
    # What it wrote before that: the typed text taken back (typed_middle.py), which the
    # client had already. ``prompt_ids`` + the tokens of ``lead + text`` is where it stands.
    lead: str = ""
    ended: bool = False  # the model ended it (end of generation), not a limit or the client
    done: asyncio.Event = field(default_factory=asyncio.Event)
    seen: float = field(default_factory=time.monotonic)

    def rest_after(self, prefix: str) -> str | None:
        """What the suggestion says comes after ``prefix``, when ``prefix`` is this one's
        with a start of the suggestion typed (at least a character); else None."""
        if len(prefix) <= len(self.prefix) or not prefix.startswith(self.prefix):
            return None
        typed = prefix[len(self.prefix) :]
        return self.text[len(typed) :] if self.text.startswith(typed) else None


def greedy(job: FimJob) -> bool:
    return job.temperature == 0 and not job.min_tokens


class Suggestions:
    """Each editor's recent greedy suggestions, most recent first."""

    def __init__(self) -> None:
        self._editors: OrderedDict[str, list[Suggestion]] = OrderedDict()

    def find(self, editor: str, made: Made, prefix: str) -> Suggestion | None:
        """The suggestion ``prefix`` types along, if any (it may still be running)."""
        if not editor:
            return None
        now = time.monotonic()
        for suggestion in self._editors.get(editor, []):
            fresh = now - suggestion.seen < TTL_S
            if fresh and suggestion.made == made and suggestion.rest_after(prefix) is not None:
                return suggestion
        return None

    def start(self, editor: str, suggestion: Suggestion) -> None:
        """Remember ``suggestion`` (it grows as it is generated); it replaces any of the same
        editor for the same prompt."""
        if not editor:
            return
        kept = [
            s
            for s in self._editors.pop(editor, [])
            if s.prompt_ids != suggestion.prompt_ids and time.monotonic() - s.seen < TTL_S
        ]
        self._editors[editor] = [suggestion, *kept][:PER_EDITOR]
        while len(self._editors) > EDITORS:
            self._editors.popitem(last=False)
