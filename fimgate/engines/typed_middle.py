"""The text typed lately goes at the middle's start, not at the prefix's end.

In Qwen's ``prefix, suffix, middle`` order every keystroke changes the prefix's end, so the
suffix behind it is read again at every keystroke (~8 ms a token on 2 cores; 64 tokens of
suffix are most of what a keystroke costs). The prompt is laid out instead as
``prefix-up-to-a-line-start <suffix> suffix <middle> typed-text``: the same document split
one line higher, a split the model was trained on, and a keystroke only appends to it, so
llama.cpp's cache (the common start) keeps the suffix and reads just the new characters.

Where the split falls depends on the prefix alone, so a request gets the same prompt (and at
temperature 0 the same completion) whatever came before it: at the start of the line that
holds the last multiple of ``SPLIT_EVERY`` chars. While the user types on, it stays put for
``SPLIT_EVERY`` chars, then moves down once (one keystroke reads the suffix again).

The last typed token is taken back and the output must start with its text (a grammar):
the user pauses anywhere, often inside what the tokenizer would merge (``[]`` before
``\\n``), and a model asked to continue such a cut token answers far worse ("token
healing"; measured on HumanEval-FIM, see docs/engine.md). The same grammar asks for more than
whitespace: with text of its own in the middle, the model ends the middle at once (a bare
newline) far more often than in the usual layout.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

SPLIT_EVERY = 256  # chars of prefix
# A split inside a longer line than this (minified code) falls at the block start itself.
MAX_LINE = 2 * SPLIT_EVERY
MAX_TAKEN = 4  # tokens taken back at most: a long word (a hash) is not typed again whole


def split_at(prefix: str) -> int:
    """Where the typed text starts in ``prefix`` (its end: nothing typed, for a prefix
    shorter than a block, since a middle that starts the file has no prefix to go on)."""
    block = len(prefix) - len(prefix) % SPLIT_EVERY
    if not block:
        return len(prefix)
    line = prefix.rfind("\n", 0, block) + 1
    return line if block - line <= MAX_LINE else block


@dataclass(frozen=True)
class Healed:
    """Typed tokens without the last one(s), and the text the output must start with."""

    ids: list[int]
    text: str
    taken: int  # tokens taken back


def heal(pieces: list[tuple[int, str | list[int]]]) -> Healed:
    """Unless the text ends a line, takes back the last token of ``(id, piece)`` pairs
    (llama.cpp's /tokenize with pieces; a piece that is not whole UTF-8 comes as bytes), and
    the tokens before it that hold part of the same run of non-space characters (at most
    ``MAX_TAKEN`` in all): ``fibon`` is `` fib`` + ``on``, but the model writes `` fibonacci``
    as one token, so both go back; ``'(':`` is `` '`` + ``(':``, but the model writes
    `` '('`` + ``:\\n``. What is kept ends on a whole character."""
    raw = [p.encode() if isinstance(p, str) else bytes(p) for _, p in pieces]
    typed = b"".join(raw).decode(errors="replace")
    if not pieces or typed.endswith("\n"):
        # A line's end is where the tokenizer splits anyway (unless a blank line follows).
        # Taken back, the model ends it sooner than the text did, and the rest of the
        # newlines start its next token: a line of spaces (HumanEval single-line, 1.5B).
        return Healed([i for i, _ in pieces], "", 0)
    run = re.search(r"\S+$", typed)  # the trailing run of non-space characters
    run_start = len(typed[: run.start()].encode()) if run else len(typed.encode())
    ends = list(itertools.accumulate(map(len, raw)))
    keep, least = len(pieces) - 1, max(0, len(pieces) - MAX_TAKEN)
    while keep > 0 and (
        not _whole(b"".join(raw[:keep])) or (keep > least and ends[keep - 1] > run_start)
    ):
        keep -= 1
    tail = b"".join(raw[keep:]).decode(errors="replace")
    return Healed([i for i, _ in pieces[:keep]], tail, len(pieces) - keep)


def _whole(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def starts_with_grammar(text: str, wants_text: bool = False) -> str:
    """A GBNF grammar for any output that starts with ``text`` and, with ``wants_text``, goes
    on with more than whitespace (none when neither applies)."""
    literal = "".join(
        c if c.isascii() and (c.isalnum() or c == " ") else f"\\U{ord(c):08x}" for c in text
    )
    rules = [f'"{literal}"'] if text else []
    if wants_text:
        rules += ["[ \\t\\r\\n]*", "[^ \\t\\r\\n\\x00]"]
    return f"root ::= {' '.join(rules)} [^\\x00]*" if rules else ""


def past_typed(piece: str, unsent: str) -> tuple[str, str]:
    """What of a generated ``piece`` goes past the taken-back text still to come
    (``unsent``), and what of that text is still to come after it."""
    return piece[len(unsent) :], unsent[len(piece) :]
