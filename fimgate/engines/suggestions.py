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
never across editors (each editor's are in its memory, engines/sessions.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from fimgate.engines.base import FimJob

PER_EDITOR = 8  # files an editor has open


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
    running: bool = False  # still being generated: its text may still grow
    seen: float = 0.0  # when it was made (the session store's clock)

    def rest_after(self, prefix: str) -> str | None:
        """What the suggestion says comes after ``prefix``, when ``prefix`` is this one's
        with a start of the suggestion typed (at least a character); else None."""
        if len(prefix) <= len(self.prefix) or not prefix.startswith(self.prefix):
            return None
        typed = prefix[len(self.prefix) :]
        return self.text[len(typed) :] if self.text.startswith(typed) else None


def greedy(job: FimJob) -> bool:
    return job.temperature == 0 and not job.min_tokens


def find(kept: list[Suggestion], made: Made, prefix: str, since: float) -> Suggestion | None:
    """The suggestion of an editor's ``kept`` ones that ``prefix`` types along, if any (made
    after ``since``; it may still be running)."""
    for suggestion in kept:
        if (
            suggestion.seen > since
            and suggestion.made == made
            and suggestion.rest_after(prefix) is not None
        ):
            return suggestion
    return None


def keep(kept: list[Suggestion], suggestion: Suggestion, since: float) -> None:
    """Put ``suggestion`` first in an editor's ``kept`` ones (it grows as it is generated),
    in place of any for the same prompt and of those made before ``since``."""
    kept[:] = [
        suggestion,
        *(s for s in kept if s.prompt_ids != suggestion.prompt_ids and s.seen > since),
    ][:PER_EDITOR]
