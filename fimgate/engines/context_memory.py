"""What each editor has shown the gateway of its files, and the chunks of other files a prompt
gets back from it.

Every completion request carries a window of some file, and some carry other files (Continue's
snippets, ``/infill``'s ``input_extra``, Tabby's segments). Within minutes an editor has shown
the code around each place its developer worked: the definition it just looked at, the module
it came from. llama.vim keeps such a ring of chunks on the client; here the gateway keeps it,
so every client gets it, including the many that send no context at all.

- **Kept**: each window and context file cut into chunks of ``CHUNK_LINES`` lines, per file
  (its path where the wire names one, else the window's first line, the place the prompt
  builder uses), per key, per workspace. A file's new window replaces the chunks of its old
  ones that it covers, so a file typed in holds its latest text. Bounded in files and bytes
  per key, in bytes overall (the least recently used key's first), and in age (``ttl``); in
  memory only, never written anywhere.
- **Read**: for a prompt, the chunks of *other* files that hold a definition (a function,
  class or type, a top-level constant) and share the most names with its window, scored as
  BM25 scores a document (each shared name weighted by how rare it is among the chunks, a
  name the chunk defines twice), none under ``MIN_SCORE``, within a size budget; and none
  at all unless one of them defines a name the window uses (an anchor). A file's
  prompt gets again what it got (its start, and llama.cpp's cache of it, stay put) until a
  file is first shown after its last answer (the developer looked elsewhere and came back);
  then the best again.
- **Who reads what**: a key reads its own memory; a workspace that opts into sharing reads
  its keys' together; nothing crosses workspaces. A revoked key's memory is dropped.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count

from fimgate.engines.base import Editor

# Measured on the editor suite's sessions (eval/RESULTS.md): 12-line chunks found the
# definition a cross-file hole needs more often than 8, 16 or 24 in the same budget.
CHUNK_LINES = 12
FILES_PER_KEY = 48
BYTES_PER_KEY = 256 * 1024
TTL_S = 900.0  # what an editor showed this long ago is forgotten
MIN_SCORE = 3.0  # BM25 of the window's names in a chunk: about two rare names shared
MIN_WORDS = 3  # a chunk with fewer distinct names is too little to judge (braces, blanks)
# A chunk is the window's own text (the same file seen from another place) when this share
# of its lines is in the window.
OWN_TEXT = 0.5
MAX_CANDIDATES = 1500  # chunks a prompt's search reads at most (~5 ms)
RARITY_AMONG = 16  # about what an editor's memory holds after a few files
# Given a file shown since, a prompt keeps the chunks it had unless the best are this much
# better (each change makes llama.cpp read the whole prompt again).
KEEP_UNLESS = 1.5

_NAME = re.compile(r"[A-Za-z_$][\w$]*")
_DEFINES = re.compile(
    r"^[ \t]*(?:export\s+)?(?:default\s+)?(?:declare\s+)?(?:abstract\s+)?(?:async\s+)?"
    r"(?:def|class|function\*?|interface|type|enum|const|let|var)\s+([A-Za-z_$][\w$]*)"
    r"|^([A-Za-z_][\w]*)\s*(?::[^=\n]*)?=[^=]",
    re.MULTILINE,
)
# What another file would use of a chunk: a function, class or type at any depth (methods
# too), or a top-level constant. A chunk without one (a body, a test, a call site) is only
# like the window, and on holes that need no other file such chunks cost: measured with
# bench/memory_recall.py, leaving them out takes the chunks those holes get from 2.56 to
# 0.82 and gives 88 cross-file holes of 116 their definition instead of 84 (eval/RESULTS.md).
_DEFINITION = re.compile(
    r"^[ \t]*(?:export\s+)?(?:default\s+)?(?:declare\s+)?(?:abstract\s+)?(?:async\s+)?"
    r"(?:def|class|function\*?|interface|type|enum)\s+[A-Za-z_$]"
    r"|^(?:export\s+)?(?:const|let|var)\s+[A-Za-z_$]",
    re.MULTILINE,
)
# Names that say nothing about which file a window needs: keywords and builtins of the
# languages editors send most.
_COMMON = frozenset(
    """self cls this def class return import from none true false null undefined async await
    function const let var new for while else elif try except finally raise with yield pass
    break continue lambda and not the int str bool float dict list tuple set any type typeof
    instanceof export default interface extends implements public private protected static
    readonly void string number boolean object catch throw case switch super len isinstance
    print args kwargs value key name data result index item items get string_types""".split()  # noqa: SIM905
)


def names_in(text: str) -> set[str]:
    return {w for w in _NAME.findall(text) if len(w) > 2 and w.lower() not in _COMMON}


def defined_in(text: str) -> set[str]:
    return {a or b for a, b in _DEFINES.findall(text)}


@dataclass(frozen=True)
class Chunk:
    id: int  # in the order it was kept: a prompt's chunks are laid out in this order
    owner: tuple[int, str, str]  # workspace, key, and the file as that key's memory knows it
    path: str  # the file's path, "" where the wire named none
    text: str
    lines: frozenset[str]  # its lines, stripped (is it the window's own text?)
    names: frozenset[str]
    defines: frozenset[str]
    has_definition: bool  # only such chunks are given (``_DEFINITION``, or its signature)

    @property
    def size(self) -> int:
        return len(self.text)


@dataclass
class _File:
    path: str
    first: float  # when the editor first showed it (a file shown since a prompt's last answer
    # is news to that prompt)
    chunks: list[Chunk] = field(default_factory=list)
    seen: float = 0.0


@dataclass(frozen=True)
class _Given:
    """What a file's prompt got, and when its request ended (None: still running)."""

    chunks: tuple[Chunk, ...]
    ended: float | None = None


@dataclass
class _KeyMemory:
    files: OrderedDict[str, _File] = field(default_factory=OrderedDict)  # least recent first
    size: int = 0
    # What each of its files' prompts got last, for keystrokes to keep it.
    given: dict[str, _Given] = field(default_factory=dict)


@dataclass(frozen=True)
class Scope:
    """Whose memory a request adds to and reads: its key's, or its workspace's keys' where
    the workspace shares."""

    workspace: int
    key: str
    shared: bool = False

    @classmethod
    def of(cls, editor: Editor) -> Scope:
        return cls(editor.workspace, editor.key_id, shared=editor.memory == "workspace")


class ContextMemory:
    """Every key's memory of its editors' files, bounded (see the module's docstring).
    ``clock`` is for tests."""

    def __init__(
        self,
        max_bytes: int = 64 * 1024 * 1024,
        ttl: float = TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self._keys: OrderedDict[tuple[int, str], _KeyMemory] = OrderedDict()  # LRU first
        self._ids = count()
        self.size = 0
        self._swept = -math.inf

    # -- keeping ---------------------------------------------------------------------------

    def remember(self, scope: Scope, place: str, path: str, text: str) -> None:
        """``text`` seen now in file ``place`` (``path`` where the wire named it)."""
        if not text.strip() or self.max_bytes <= 0:
            return
        memory = self._keys.pop((scope.workspace, scope.key), None) or _KeyMemory()
        self._keys[(scope.workspace, scope.key)] = memory
        file = memory.files.pop(place, None) or _File(path, first=self.clock())
        memory.files[place] = file
        file.seen, file.path = self.clock(), path or file.path
        before = sum(c.size for c in file.chunks)
        # Text it held already keeps its chunk (and id: a prompt that got it keeps its start).
        held = {c.text: c for c in file.chunks}
        owner = (scope.workspace, scope.key, place)
        new = [held.get(c.text, c) for c in self._chunks(owner, path, text)]
        covered = set().union(*(c.lines for c in new)) if new else set()
        texts = {c.text for c in new}
        file.chunks = [
            c for c in file.chunks if c.text not in texts and not _mostly_in(c.lines, covered)
        ] + new
        self._grow(memory, sum(c.size for c in file.chunks) - before)
        self._bound(memory)

    def _chunks(self, owner: tuple[int, str, str], path: str, text: str) -> Iterable[Chunk]:
        lines = text.split("\n")
        open_signature = False  # did the previous chunk end inside a definition's parentheses?
        for start in range(0, len(lines), CHUNK_LINES):
            part = "\n".join(lines[start : start + CHUNK_LINES]).strip("\n")
            definitions = list(_DEFINITION.finditer(part))
            # A signature cut by the chunk's end (``def __init__(`` here, its parameters in
            # the next chunk) makes the next chunk part of the definition: without its
            # parameters the model guesses them (eval/RESULTS.md). The next chunk only: a
            # stray parenthesis in a string must not carry on through the file.
            continues = open_signature
            tail = part[definitions[-1].start() :] if definitions else ""
            open_signature = tail.count("(") > tail.count(")")
            names = names_in(part)
            if len(names) < MIN_WORDS:
                continue
            stripped = frozenset(s for line in part.split("\n") if (s := line.strip()))
            yield Chunk(
                next(self._ids), owner, path, part, stripped, frozenset(names),
                frozenset(defined_in(part)), bool(definitions) or continues,
            )  # fmt: skip

    def _grow(self, memory: _KeyMemory, delta: int) -> None:
        memory.size += delta
        self.size += delta

    def _bound(self, memory: _KeyMemory) -> None:
        """Oldest files out past a key's bounds; least recently used keys out past the whole's."""
        while memory.files and (len(memory.files) > FILES_PER_KEY or memory.size > BYTES_PER_KEY):
            self._drop_file(memory, next(iter(memory.files)))
        while self.size > self.max_bytes and self._keys:
            self._drop_key(next(iter(self._keys)))

    def _drop_file(self, memory: _KeyMemory, place: str) -> None:
        file = memory.files.pop(place)
        self._grow(memory, -sum(c.size for c in file.chunks))

    def _drop_key(self, owner: tuple[int, str]) -> None:
        memory = self._keys.pop(owner)
        self.size -= memory.size

    def forget_key(self, key: str) -> None:
        """Everything ``key`` showed (it was revoked)."""
        for owner in [o for o in self._keys if o[1] == key]:
            self._drop_key(owner)

    def key_ids(self) -> set[str]:
        return {key for _, key in self._keys}

    def chunks_of(self, key: str) -> int:
        return sum(
            len(f.chunks) for (_, k), m in self._keys.items() if k == key for f in m.files.values()
        )

    def _expire(self) -> None:
        """Files not seen within ``ttl`` out (at most once a second: it reads every key)."""
        if self.clock() - self._swept < 1.0:
            return
        self._swept = self.clock()
        horizon = self.clock() - self.ttl
        for owner, memory in list(self._keys.items()):
            for place in [p for p, f in memory.files.items() if f.seen < horizon]:
                self._drop_file(memory, place)
            if not memory.files:
                self._drop_key(owner)

    # -- reading ---------------------------------------------------------------------------

    def recall(
        self, scope: Scope, place: str, window: str, budget: int, besides: Sequence[str] = ()
    ) -> list[Chunk]:
        """The chunks of other files most related to ``window``, best first, ``budget``
        chars in all, none mostly the window's text or ``besides`` (what the prompt carries
        already: the files its client sent). A file's prompt gets again what it got (those
        still remembered), so its start, and llama.cpp's cache of it, stay put while its
        editor types on, unless a file was first shown since its last request ended (the
        developer looked elsewhere): then the best again, unless what it had is about as
        good (``KEEP_UNLESS``)."""
        self._expire()
        mine = self._keys.get((scope.workspace, scope.key))
        if mine is None:
            return []
        window_lines = {
            s for text in (window, *besides) for line in text.split("\n") if (s := line.strip())
        }
        last = mine.given.pop(place, None)
        had = [c for c in last.chunks if self._holds(c, scope, window_lines)] if last else []
        news = last is None or (
            last.ended is not None
            and any(f.first >= last.ended for f in self._readable(scope, place))
        )
        if not news:  # typing on: the start llama.cpp holds
            return self._give(mine, place, had)
        candidates: list[Chunk] = []
        for file in self._readable(scope, place):
            candidates += (c for c in file.chunks if not _mostly_in(c.lines, window_lines))
            if len(candidates) >= MAX_CANDIDATES:  # a large shared workspace: its most recent
                break
        known = {c.id for c in candidates}
        pool = candidates + [c for c in had if c.id not in known]
        if not pool:
            return self._give(mine, place, [])
        names = names_in(window)
        scored = _bm25(pool, names)
        # Names are weighed as rare or not among all it showed; only definitions are given.
        ranked = sorted((c for c in candidates if c.has_definition and scored[c.id] >= MIN_SCORE),
                        key=lambda c: (-scored[c.id], c.id))  # fmt: skip
        best = _within(ranked, budget)
        still = all(scored[c.id] >= MIN_SCORE for c in had)
        if (
            had
            and still
            and sum(scored[c.id] for c in best) < KEEP_UNLESS * sum(scored[c.id] for c in had)
        ):
            best = had
        anchored = _anchored(best, names - defined_in(window))
        return self._give(mine, place, best if anchored else [])

    def _readable(self, scope: Scope, place: str) -> Iterator[_File]:
        """The other files ``scope`` may read, most recently used key and file first."""
        for (workspace, key), memory in reversed(self._keys.items()):
            if workspace == scope.workspace and (key == scope.key or scope.shared):
                for other, file in reversed(memory.files.items()):
                    if other != place:
                        yield file

    def answered(self, scope: Scope, place: str) -> None:
        """A request in file ``place`` ended: files shown from now on are news to it."""
        mine = self._keys.get((scope.workspace, scope.key))
        given = mine.given.get(place) if mine else None
        if mine is not None and given is not None:
            mine.given[place] = _Given(given.chunks, self.clock())

    def _give(self, mine: _KeyMemory, place: str, chunks: list[Chunk]) -> list[Chunk]:
        mine.given[place] = _Given(tuple(chunks))
        if len(mine.given) > FILES_PER_KEY:
            mine.given.pop(next(iter(mine.given)))
        return chunks

    def _holds(self, chunk: Chunk, scope: Scope, window_lines: set[str]) -> bool:
        """Whether a chunk given before may be given again: its file still remembered (not
        forgotten, not a revoked key's), its key still readable, not the window's text."""
        workspace, key, place = chunk.owner
        memory = self._keys.get((workspace, key))
        return (
            memory is not None
            and place in memory.files
            and (key == scope.key or scope.shared)
            and not _mostly_in(chunk.lines, window_lines)
        )


def _anchored(chunks: list[Chunk], used: set[str]) -> bool:
    """Whether one of ``chunks`` defines a name the window uses (``used``: its names but
    those it defines itself): else they only look like the window (its words, a pattern
    like its own) and give the model nothing it lacks. On the 1.5B's holes that need no
    other file such sets cost two tasks and won one; on the cross-file holes, where the name
    the hole needs is often not yet in the window, they won none for either model
    (eval/RESULTS.md, "Anchored")."""
    return any(chunk.defines & used for chunk in chunks)


def _mostly_in(lines: frozenset[str], among: set[str]) -> bool:
    return bool(lines) and len(lines & among) >= OWN_TEXT * len(lines)


def _within(ranked: list[Chunk], budget: int) -> list[Chunk]:
    """The best chunks that fit ``budget`` chars together."""
    kept, used = [], 0
    for chunk in ranked:
        if used + chunk.size <= budget:
            kept.append(chunk)
            used += chunk.size
    return kept


def _bm25(
    chunks: list[Chunk], query: set[str], k1: float = 1.2, b: float = 0.75
) -> dict[int, float]:
    """Each chunk's BM25 score for the window's names (each name once), a name the chunk
    defines counted twice. Rarity is judged as among at least ``RARITY_AMONG`` chunks, so a
    memory of a few chunks scores as a usual one does (``MIN_SCORE`` means the same)."""
    n = max(len(chunks), RARITY_AMONG)
    seen: dict[str, int] = {}
    for chunk in chunks:
        for name in chunk.names & query:
            seen[name] = seen.get(name, 0) + 1
    rarity = {w: math.log(1 + (n - k + 0.5) / (k + 0.5)) for w, k in seen.items()}
    average = sum(len(c.names) for c in chunks) / len(chunks)
    scores = {}
    for chunk in chunks:
        norm = (k1 + 1) / (1 + k1 * (1 - b + b * len(chunk.names) / average))
        scores[chunk.id] = norm * sum(
            rarity[w] * (2 if w in chunk.defines else 1) for w in chunk.names & query
        )
    return scores
