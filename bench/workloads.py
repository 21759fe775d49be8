"""Benchmark workloads cut from real source files: the Python standard library that is on
every machine, so every run and every peer sees the same text.

The context an editor sends is modelled on Continue's: the lines before the cursor up to a
budget (~800 tokens), the lines after it up to a smaller one (~200 tokens), cut at line
boundaries, so the prefix's start moves only when whole lines are typed.
"""

from __future__ import annotations

import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

STDLIB = Path(sysconfig.get_paths()["stdlib"])
EDITOR_FILES = ("argparse.py", "textwrap.py", "json/decoder.py", "http/cookies.py")
COLD_FILES = ("functools.py", "csv.py", "dataclasses.py", "calendar.py", "shlex.py", "fractions.py")
PREFIX_CHARS = 2800  # ~800 tokens of code
SUFFIX_CHARS = 700  # ~200 tokens


@dataclass(frozen=True)
class Prompt:
    prefix: str
    suffix: str


def window(before: str, after: str) -> Prompt:
    """Continue-like context: whole lines around the cursor, within the budgets."""
    lines = before.split("\n")
    kept, size = [lines[-1]], len(lines[-1])
    for line in reversed(lines[:-1]):
        if size + len(line) + 1 > PREFIX_CHARS:
            break
        kept.insert(0, line)
        size += len(line) + 1
    after_lines = after.split("\n")
    taken, size = [after_lines[0]], len(after_lines[0])
    for line in after_lines[1:]:
        if size + len(line) + 1 > SUFFIX_CHARS:
            break
        taken.append(line)
        size += len(line) + 1
    return Prompt("\n".join(kept), "\n".join(taken))


def _text(name: str) -> str:
    return (STDLIB / name).read_text()


def _line_start(text: str, fraction: float) -> int:
    return text.rfind("\n", 0, int(len(text) * fraction)) + 1


def keystrokes(name: str, chars: int, seed: int) -> list[Prompt]:
    """A typist re-typing ``chars`` characters from the middle of file ``name``, pausing
    every 1 to 4 characters; one prompt per pause."""
    text = _text(name)
    start = _line_start(text, 0.5)
    end = start + chars
    rng = random.Random(seed)
    prompts, typed = [], 0
    while typed < chars:
        typed = min(chars, typed + rng.randint(1, 4))
        prompts.append(window(text[: start + typed], text[end:]))
    return prompts


def editors(count: int, chars: int) -> list[list[Prompt]]:
    return [keystrokes(EDITOR_FILES[i % len(EDITOR_FILES)], chars, seed=i) for i in range(count)]


def cold(count: int) -> list[Prompt]:
    """Unrelated ~1,000-token prompts, the cursor mid-line in the middle of each file."""
    prompts = []
    for name in COLD_FILES[:count]:
        text = _text(name)
        cursor = _line_start(text, 0.5) + 8
        prompts.append(window(text[:cursor], text[cursor:]))
    return prompts
