"""Whether completions help, inferred from the next request (a Mistral-API client sends no
accept events, as Tabby's clients do): the last completion a key was shown is judged by that
key's next prompt. If the completion's text now stands right after where its prompt ended,
in full or in part, it was accepted, and that many characters of it.

- The end of the earlier prefix (its last ``ANCHOR`` characters) is looked for in the new
  prefix; what follows it is what came into the file since. Not found: the editor moved
  elsewhere, and the completion was not taken.
- Accepted characters: the common start of that text and the completion. Fully accepted
  when it covers the whole completion (trailing whitespace aside). In part only when the
  common start is ``MIN_PARTIAL`` characters or more and ends where a word of the
  completion ends, as an editor's accept-next-word takes it: text typed by hand that
  happens to match stops where the typing stopped or went another way, mostly inside a
  word or after a space or a bracket (bench/acceptance.py measured the difference: with
  any 4 common characters, 40 of 76 ignored completions counted as taken in part; with the
  word end, 2).
- Each completion is judged once, by the next request of its key and model; a completion
  with no next request is never judged (it is not counted either way).

The last completion shown is kept in the editor's memory (engines/sessions.py), per
replica: with several replicas, a balancer that keeps a key's requests on one replica
(docs/deploy.md) keeps them where its last completion is; without one, fewer are judged.
"""

from __future__ import annotations

from dataclasses import dataclass

ANCHOR = 96
MIN_PARTIAL = 4


@dataclass(frozen=True)
class Verdict:
    shown_chars: int  # the judged completion's length
    accepted_chars: int  # 0: not accepted

    @property
    def accepted(self) -> bool:
        return self.accepted_chars > 0


def _common_start(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def judge(anchor: str, text: str, prefix: str) -> Verdict:
    """How much of ``text``, shown after a prefix ending in ``anchor``, ``prefix`` now holds."""
    shown = len(text.rstrip())
    at = prefix.rfind(anchor)
    if at < 0:
        return Verdict(shown, 0)
    since = prefix[at + len(anchor) :]
    common = _common_start(since, text)
    if common >= shown:
        return Verdict(shown, shown)
    word_end = _is_word(text[common - 1 : common]) and not _is_word(text[common : common + 1])
    return Verdict(shown, common if common >= MIN_PARTIAL and word_end else 0)


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


@dataclass(frozen=True)
class Shown:
    """A completion shown to an editor, to be judged by its next prompt: the end of the
    prompt it completed, and its text."""

    anchor: str
    text: str


def shown(prefix: str, text: str) -> Shown | None:
    """What a request that showed ``text`` after ``prefix`` leaves to be judged; None when
    there is nothing to judge (no text, or no prompt end to find again)."""
    if not text.strip() or len(prefix) < MIN_PARTIAL:
        return None
    return Shown(prefix[-ANCHOR:], text)


def succeed(last: Shown | None, prefix: str, text: str) -> tuple[Verdict | None, Shown | None]:
    """When an editor's request ends: its last completion judged by this prompt, and what
    this one leaves for the next to judge (``text``: what this one showed, if anything).
    Judged as each request ends, a completion is judged by the prompt of the request that
    ended after it, even where the next keystroke's request began before it had ended."""
    verdict = judge(last.anchor, last.text, prefix) if last is not None else None
    return verdict, shown(prefix, text)
