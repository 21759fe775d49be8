"""Where a FIM middle ends, beyond the model's own end tokens.

The packaged models are Instruct variants: after the right middle they often go on, typing
the suffix again and then drifting into chat (code fences, "# Test the function"). Two
endings are applied to every completion, in the stream, before text reaches the client:

- **Chat artefacts**: a code fence, or a chat/FIM marker written out as text, unless the
  document itself contains it (a Markdown file has fences of its own). The markers are
  end-of-generation tokens in llama.cpp already; as text they can only be drift.
- **The suffix, typed again**: a whole output line equal (indentation included, a trailing
  comment allowed) to the suffix's first complete non-blank line; as the completion's first
  line, only with the suffix's next line after it. The completion ends before it and the
  comment lines leading to it ("# Example usage"), and blank lines the suffix starts with
  anyway are not sent twice.
- **The suffix's next line, joined on**: the completion's first line going on, after
  something of its own and a space, with the text of the suffix's first complete non-blank
  line (a trailing comment allowed) and ending there, as in ``tuple, m[:-1])) for m in r``
  above a suffix line ``for m in r``. The completion ends before the space. Only a line of at
  least ``JOIN_MIN_CHARS`` with a letter or digit: ``}`` or ``)`` on one line is often right.

Text that may turn out to be the start of either is held back until it cannot be.
"""

from __future__ import annotations

from fimgate.engines.stops import StopMatcher

CHAT_ARTEFACTS = (
    "```", "<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|file_sep|>", "<|fim_pad|>"
)  # fmt: skip


def artefact_stops(prefix: str, suffix: str) -> tuple[str, ...]:
    """The chat artefacts that cannot be part of this document's code."""
    return tuple(a for a in CHAT_ARTEFACTS if a not in prefix and a not in suffix)


ANCHOR_LINES = 2  # the suffix's lines a completion's first line must be followed by


def suffix_anchor(prefix: str, suffix: str) -> tuple[str, ...]:
    """The suffix's first complete non-blank lines (up to ``ANCHOR_LINES``), right-stripped.

    With the cursor mid-line, the suffix's first line is the rest of the cursor's line, which
    a right middle ends in front of: it is skipped.
    """
    lines = suffix.split("\n")
    if prefix and not prefix.endswith("\n"):
        lines = lines[1:]
    if not suffix.endswith("\n") and lines:
        lines = lines[:-1]  # the last line may be cut short by the client's window
    return tuple(line.rstrip() for line in lines if line.strip())[:ANCHOR_LINES]


def _is_comment(line: str, partial: bool = False) -> bool:
    # "# note" or "// note" (not "#include"); a partial line may still become one.
    text = line.strip()
    return text.startswith(("# ", "// ")) or text in ("#", "//") or (partial and text == "/")


def _matches(line: str, anchor: str) -> bool:
    # The anchor line again, a trailing comment allowed: print(f(10))  # Output: 55
    line = line.rstrip()
    if not line.startswith(anchor):
        return False
    rest = line[len(anchor) :]
    return not rest or (rest[0] in " \t" and _is_comment(rest))


class SuffixOverlap:
    """Ends a stream of text where it starts typing the suffix's lines (``anchor``) again.

    After some text, one line of the suffix again is enough. As the completion's first line
    it may be the right middle (two ``return False`` in a row) or nothing to insert: then only
    the suffix's next line too makes it the suffix.

    Held back meanwhile: the newline ending the last line, blank and comment lines after it
    (they would come before the suffix: "# Example usage"), the anchor lines matched so far,
    and a line being written that so far is the next anchor line's start. On a match, the
    comment lines leading to it are dropped with it.
    """

    def __init__(self, anchor: tuple[str, ...], *, at_line_start: bool, trim_blank: bool) -> None:
        self._anchor = anchor
        self._line_start = at_line_start  # whether the next character begins a line
        self._trim_blank = trim_blank  # the suffix starts with its own newline
        self._held = ""
        self._matched = 0  # anchor lines held, complete
        self._cut = 0  # where in ``_held`` the first of them starts
        self._wrote = False  # whether text other than whitespace went out

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns the text safe to emit now, and whether the suffix began again."""
        out: list[str] = []
        for char in text:
            if not self._held and char != "\n" and not self._line_start:
                out.append(char)  # inside a line that began as something else
                self._wrote = self._wrote or not char.isspace()
                continue
            self._held += char
            self._line_start = char == "\n"
            line = self._current_line()
            if char == "\n":
                if _matches(line, self._anchor[self._matched]):
                    if not self._matched:
                        self._cut = len(self._held) - len(line) - 1
                    self._matched += 1
                    if self._matched == self._needed():
                        return "".join(out) + self._end(), True
                elif line.strip() and (self._matched or not _is_comment(line)):
                    out.append(self._release(keep_newline=True))
            elif not self._may_continue(line):
                out.append(self._release(keep_newline=False))
        return "".join(out), False

    def flush(self) -> str:
        """The held text once the stream has ended (less the suffix, if it ended on it)."""
        line = self._held[self._held.rfind("\n") + 1 :]
        if (
            line.strip()
            and self._matched == self._needed() - 1
            and _matches(line, self._anchor[self._matched])
        ):
            if not self._matched:
                self._cut = len(self._held) - len(line)
            return self._end()
        return self._release(keep_newline=False)

    def _needed(self) -> int:
        return 1 if self._wrote else len(self._anchor)

    def _current_line(self) -> str:
        # The line being written, or the one just ended by a newline.
        body = self._held[:-1] if self._held.endswith("\n") else self._held
        return body[body.rfind("\n") + 1 :]

    def _may_continue(self, line: str) -> bool:
        anchor = self._anchor[self._matched]
        return (
            not line.strip()
            or anchor.startswith(line)
            or line.startswith(anchor)
            or (not self._matched and _is_comment(line, partial=True))
        )

    def _release(self, *, keep_newline: bool) -> str:
        # Not the suffix after all: out with it, but a newline just written may still be
        # followed by the suffix.
        held = self._held[:-1] if keep_newline else self._held
        self._held, self._matched = ("\n" if keep_newline else ""), 0
        self._wrote = self._wrote or bool(held.strip())
        return held

    def _end(self) -> str:
        # What was held before the suffix: blank lines (kept unless the suffix brings its
        # own) and comment lines (dropped: the model's lead-in to typing the suffix again).
        before = self._held[: self._cut]
        self._held, self._matched = "", 0
        if self._trim_blank:
            return ""
        return "".join(f"{line}\n" for line in before.split("\n")[:-1] if not line.strip())


JOIN_MIN_CHARS = 8


class JoinedSuffix:
    """Ends the completion's first line before the suffix's next line typed onto it
    (``anchor``, stripped): held back meanwhile is a run starting with a space that so far
    may become it; past the first line, text goes through."""

    def __init__(self, anchor: str) -> None:
        self._anchor = anchor
        self._held = ""
        self._wrote = False  # text of the completion's own on this line
        self._done = False  # past the first line

    @staticmethod
    def applies(anchor: str) -> bool:
        return len(anchor) >= JOIN_MIN_CHARS and any(c.isalnum() for c in anchor)

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns the text safe to emit now, and whether the first line ended on the join."""
        if self._done:
            return text, False
        line, newline, rest = text.partition("\n")
        buf = self._held + line
        start = self._hold_from(buf)
        out, self._held = buf[:start], buf[start:]
        self._wrote = self._wrote or bool(out.strip())
        if not newline:
            return out, False
        if self._joined():
            self._held = ""
            return out, True
        self._done = True
        return out + self.flush() + newline + rest, False

    def flush(self) -> str:
        """The held text once the stream has ended (nothing, if it ended on the join)."""
        held, self._held = self._held, ""
        return "" if self._joined(held) else held

    def _joined(self, held: str | None = None) -> bool:
        held = self._held if held is None else held
        return self._wrote and held[:1] in (" ", "\t") and _matches(held.lstrip(), self._anchor)

    def _hold_from(self, buf: str) -> int:
        # The first space after text of the line's own from which the rest may become the join.
        wrote = self._wrote
        for i, char in enumerate(buf):
            if char in " \t" and wrote and self._may_join(buf[i:]):
                return i
            wrote = wrote or not char.isspace()
        return len(buf)

    def _may_join(self, run: str) -> bool:
        text = run.lstrip()
        if not text or self._anchor.startswith(text):
            return True
        rest = text[len(self._anchor) :] if text.startswith(self._anchor) else None
        return rest is not None and (
            not rest.strip() or (rest[0] in " \t" and _is_comment(rest, partial=True))
        )


class IndentEnd:
    """llama.cpp's ``n_indent``: after the first line, a line whose text starts with less
    indentation than ``n_indent`` ends the completion before that text (its indentation,
    already sent, is kept, as llama.cpp keeps it; a blank line counts as none)."""

    def __init__(self, n_indent: int) -> None:
        self._n = n_indent
        self._indent: int | None = None  # the current line's so far; None: past it

    def feed(self, text: str) -> tuple[str, bool]:
        for i, char in enumerate(text):
            if self._indent is None:
                self._indent = 0 if char == "\n" else None
            elif char in " \t":
                self._indent += 1
            elif self._indent < self._n:
                return text[:i], True
            else:
                self._indent = 0 if char == "\n" else None
        return text, False


class MiddleEnd:
    """The client's stop strings, then (with ``detect``) chat artefacts, the suffix's next line
    joined onto the first and the suffix typed again, and (with ``n_indent``) a line indented
    too little, over one completion's stream of text."""

    def __init__(
        self, stop: tuple[str, ...], prefix: str, suffix: str, *, detect: bool,
        n_indent: int = 0,
    ) -> None:  # fmt: skip
        self._indent = IndentEnd(n_indent) if n_indent > 0 else None
        self._stops = StopMatcher([*stop, *(artefact_stops(prefix, suffix) if detect else ())])
        anchor = suffix_anchor(prefix, suffix) if detect else None
        joined = anchor[0].strip() if anchor else ""
        self._joined = JoinedSuffix(joined) if JoinedSuffix.applies(joined) else None
        self._overlap = (
            SuffixOverlap(
                anchor,
                at_line_start=not prefix or prefix.endswith("\n"),
                trim_blank=suffix.lstrip(" \t").startswith("\n"),
            )
            if anchor
            else None
        )

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns the text safe to emit now, and whether the completion ends here."""
        text, stopped = self._indented(*self._stops.feed(text))
        if self._joined is not None:
            text, joined = self._joined.feed(text)
            if stopped and not joined:
                text += self._joined.flush()
            stopped = stopped or joined
        if self._overlap is not None:
            text, overlapped = self._overlap.feed(text)
            if stopped and not overlapped:
                text += self._overlap.flush()
            stopped = stopped or overlapped
        return text, stopped

    def flush(self) -> str:
        """What is left to emit once the stream has ended."""
        text, _ = self._indented(self._stops.flush(), False)
        if self._joined is not None:
            text, joined = self._joined.feed(text)
            text = text if joined else text + self._joined.flush()
        if self._overlap is not None:
            text, overlapped = self._overlap.feed(text)
            text = text if overlapped else text + self._overlap.flush()
        return text

    def _indented(self, text: str, stopped: bool) -> tuple[str, bool]:
        # On the model's text as written: a line indented too little ends it at once.
        if self._indent is None:
            return text, stopped
        text, cut = self._indent.feed(text)
        return text, stopped or cut
