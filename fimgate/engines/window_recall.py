"""Puts back the lines an editor dropped from the top of its context window.

Continue, like most FIM clients, sends whole lines around the cursor within a budget, so as
the user types, a line leaves the top of the prefix about every 30 characters. The prompt then
starts differently from the last one, and llama.cpp, whose cache is the common start, reads
the whole prompt again: 5-10 s on 2 cores, every few keystrokes. The lines that left are
those the previous prompt started with, so putting them back gives the prompt the start the
cache holds, and only the typed text is read. The model sees more of the same file.

Remembered text is kept per editor (engines/sessions.py), never shared: a prompt only ever
gets back text that the same editor sent. It expires after a few minutes, so lines edited
elsewhere since are not put back for long.
"""

from __future__ import annotations

from dataclasses import dataclass

HEAD_CHARS = 64  # the new prefix's start, searched for in remembered prefixes
MIN_OVERLAP = 256  # chars a new prefix must share with a remembered one, from its start
# Chars a remembered prefix may run past the new one's shared part: the user deleted them,
# or the previous request was sent a little further on.
SLACK_CHARS = 256
PREFIXES_PER_EDITOR = 16  # files an editor (or a team sharing a key) has open


@dataclass(frozen=True)
class Remembered:
    text: str
    seen: float  # when it was sent (the session store's clock)


def window_start(remembered: str, prefix: str) -> int | None:
    """Where ``prefix`` starts inside ``remembered``, if it is the same window moved down:
    from there on the two agree for ``MIN_OVERLAP`` chars and to within ``SLACK_CHARS`` of
    the remembered text's end (the cursor is where it was, or further on)."""
    if len(prefix) < MIN_OVERLAP:
        return None
    head = prefix[:HEAD_CHARS]
    at = remembered.find(head)
    while at >= 0:
        rest = remembered[at:]
        shared = _shared_start(rest, prefix)
        if shared >= MIN_OVERLAP and shared >= len(rest) - SLACK_CHARS:
            return at
        at = remembered.find(head, at + 1)
    return None


def _shared_start(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the usual case, without a loop in Python
        return n
    return next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)


def restore(kept: list[Remembered], prefix: str, now: float, since: float, limit: int) -> str:
    """``prefix`` with the lines its window dropped put back from an editor's ``kept``
    prefixes (those seen after ``since``); remembers the result there, kept to ``limit``
    chars."""
    fresh = [r for r in kept if r.seen > since]
    restored = prefix
    for i, remembered in enumerate(fresh):
        at = window_start(remembered.text, prefix)
        if at is not None:
            restored = remembered.text[:at] + prefix
            del fresh[i]  # superseded by the restored prefix
            break
    restored = _bounded(restored, limit)
    kept[:] = [Remembered(restored, now), *fresh][:PREFIXES_PER_EDITOR]
    return restored


def _bounded(text: str, limit: int) -> str:
    # Cut to half at a line start, so the start (and the cache) moves once in a long while.
    if len(text) <= limit:
        return text
    cut = text.find("\n", len(text) - limit // 2)
    return text[cut + 1 :] if cut >= 0 else text[-(limit // 2) :]
