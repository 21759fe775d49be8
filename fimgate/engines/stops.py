"""Stop strings over a stream of text deltas, the same for every engine.

A stop string may arrive split across deltas, so text that could be the start of one is held
back until it is known not to be; the stop string itself is never returned.
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns the text safe to emit now, and whether a stop string was reached."""
        if not self._stops:
            return text, False
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            return buf[:cut], True
        hold = max((self._partial(buf, s) for s in self._stops), default=0)
        self._held = buf[len(buf) - hold :]
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        """The held-back text, once the stream has ended without reaching a stop string."""
        rest, self._held = self._held, ""
        return rest

    @staticmethod
    def _partial(buf: str, stop: str) -> int:
        # Length of the longest end of ``buf`` that begins ``stop``.
        for k in range(min(len(stop) - 1, len(buf)), 0, -1):
            if buf.endswith(stop[:k]):
                return k
        return 0
