"""An editing session before each hole (``fimgate eval --suite editor --wires session``):
the files a developer visits on the way to the hole, each one completion request.

Before the hole, the session visits, in an order shuffled per task:

- the file of each definition the task's snippets hold (for a cross-file task, the one the
  hole needs): the cursor on a line inside the definition, as after go-to-definition;
- ``DISTRACTORS`` other files of the same package, picked at random: a line anywhere.

Each visit is the window Continue would send there (``PREFIX_CHARS`` before the cursor,
``SUFFIX_CHARS`` after), bare, through the FIM route. Then the hole is asked for bare, with
no client context: whatever the gateway adds comes from what the session showed it. Every
task runs under a key of its own, so no task's session reaches another's hole.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from fimgate_eval.editor_holes import (
    NODE_MODULES,
    NODE_PACKAGES,
    PREFIX_CHARS,
    HoleTask,
    _package_root,
    _python_root,
    lines_after,
)

DISTRACTORS = 2
SUFFIXES = {"py": (".py",), "ts": (".ts",), "js": (".js", ".cjs", ".mjs")}


@dataclass(frozen=True)
class Visit:
    path: str
    prefix: str
    suffix: str
    definition: bool  # a definition's file, not a distractor


def base_of(task: HoleTask) -> Path | None:
    """The folder the task's paths (and its snippets') are relative to."""
    if task.language == "py":
        root = _python_root(task.repo)
        return root.parent if root else None
    for name, sub in NODE_PACKAGES[task.language]:
        if name == task.repo:
            return _package_root(NODE_MODULES / name / sub)
    return None


def visits(task: HoleTask) -> list[Visit]:
    base = base_of(task)
    if base is None:
        return []
    rng = random.Random(int(hashlib.sha256(task.name.encode()).hexdigest()[:8], 16))
    out: list[Visit] = []
    for snippet in task.snippets:
        lines = _lines(base / snippet.path)
        first = snippet.text.split("\n", 1)[0]
        start = next((i for i, line in enumerate(lines) if line == first), None)
        if start is None:
            continue
        inside = start + rng.randrange(max(1, snippet.text.count("\n") + 1))
        out.append(Visit(snippet.path, *_window(lines, inside, rng), definition=True))
    taken = {task.path, *(s.path for s in task.snippets)}
    others = sorted(
        str(f.relative_to(base))
        for f in _files(base, task)
        if str(f.relative_to(base)) not in taken
    )
    for path in rng.sample(others, min(DISTRACTORS, len(others))):
        lines = _lines(base / path)
        out.append(Visit(path, *_window(lines, rng.randrange(len(lines)), rng), definition=False))
    rng.shuffle(out)
    return out


def _files(base: Path, task: HoleTask) -> list[Path]:
    """The package's other source files of the task's language (40 lines or more)."""
    root = base / task.path.split("/", 1)[0] if task.language == "py" else base
    return [
        f
        for f in root.rglob("*")
        if f.suffix in SUFFIXES[task.language]
        and "node_modules" not in f.relative_to(base).parts
        and not f.name.endswith(".d.ts")
        and 40 <= len(_lines(f)) <= 4000
    ]


def _lines(file: Path) -> list[str]:
    return file.read_text(encoding="utf-8", errors="replace").split("\n")


def _window(lines: list[str], index: int, rng: random.Random) -> tuple[str, str]:
    """Continue's window at line ``index``, the cursor somewhere in the line."""
    line = lines[index]
    cursor = rng.randrange(len(line) + 1)
    before, size = [], 0
    for previous in reversed(lines[:index]):
        size += len(previous) + 1
        if size > PREFIX_CHARS:
            break
        before.append(previous)
    prefix = "".join(f"{text}\n" for text in reversed(before)) + line[:cursor]
    return prefix, line[cursor:] + lines_after(lines, index)
