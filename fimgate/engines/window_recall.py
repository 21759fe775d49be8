"""Puts back the lines an editor dropped from the top of its context window.

Continue, like most FIM clients, sends whole lines around the cursor within a budget, so as
the user types, a line leaves the top of the prefix about every 30 characters. The prompt then
starts differently from the last one, and llama.cpp, whose cache is the common start, reads
the whole prompt again: 5-10 s on 2 cores, every few keystrokes. The lines that left are
those the previous prompt started with, so putting them back gives the prompt the start the
cache holds, and only the typed text is read. The model sees more of the same file.

Remembered text is kept per editor (the API key), never shared: a prompt only ever gets back
text that the same key sent. It expires after a few minutes, so lines edited elsewhere since
are not put back for long.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

HEAD_CHARS = 64  # the new prefix's start, searched for in remembered prefixes
MIN_OVERLAP = 256  # chars a new prefix must share with a remembered one, from its start
# Chars a remembered prefix may run past the new one's shared part: the user deleted them,
# or the previous request was sent a little further on.
SLACK_CHARS = 256
PREFIXES_PER_EDITOR = 16  # files an editor (or a team sharing a key) has open
EDITORS = 256
TTL_S = 600.0


@dataclass
class _Remembered:
    text: str
    seen: float


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


class WindowRecall:
    """The recent prefixes of each editor, most recent first, each kept to ``max_chars``."""

    def __init__(self, max_chars: int) -> None:
        self._max_chars = max_chars
        self._editors: OrderedDict[str, list[_Remembered]] = OrderedDict()

    def restore(self, editor: str, prefix: str) -> str:
        """``prefix`` with the lines its window dropped put back; remembers the result."""
        if not editor:
            return prefix
        now = time.monotonic()
        kept = [r for r in self._editors.pop(editor, []) if now - r.seen < TTL_S]
        restored = prefix
        for i, remembered in enumerate(kept):
            at = window_start(remembered.text, prefix)
            if at is not None:
                restored = remembered.text[:at] + prefix
                del kept[i]  # superseded by the restored prefix
                break
        restored = self._bounded(restored)
        self._editors[editor] = [_Remembered(restored, now), *kept][:PREFIXES_PER_EDITOR]
        while len(self._editors) > EDITORS:
            self._editors.popitem(last=False)
        return restored

    def _bounded(self, text: str) -> str:
        # Cut to half at a line start, so the start (and the cache) moves once in a long while.
        if len(text) <= self._max_chars:
            return text
        cut = text.find("\n", len(text) - self._max_chars // 2)
        return text[cut + 1 :] if cut >= 0 else text[-(self._max_chars // 2) :]
