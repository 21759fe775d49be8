"""Holes cut from real multi-file code, in the windows an editor sends (``fimgate eval
--suite editor``).

HumanEval-FIM prefixes are short and self-contained; editors send ~1,500 characters before
the cursor, ~500 after, and snippets of other files. These tasks are cut from code the
package registries give every install, read where it lies and never copied:

- Python: packages installed beside fimgate (its own dependencies: httpx, starlette, click,
  rich, pydantic, ...); their versions float with the install, so results name them.
- JavaScript and TypeScript: the npm packages ``scripts/setup --test`` installs for the
  Continue adapter tests (``tests/continue/node_modules``, pinned by its lock file).

Holes are single-line (the rest of a line, from its indentation or from inside it) and
multi-line (2-4 lines from a line's indentation). A task is **cross-file** when its hole uses
a name imported from another file of the same package and absent from the window before the
cursor: that name's definition is the snippet an editor would hold (Continue's
imports/definitions source). Every task also carries the definitions of other imported names
near the cursor, so the four wire formats (bare, and Continue's three) differ on every task
that has any.

Generation is deterministic: files in sorted order, a random generator seeded per package.
"""

from __future__ import annotations

import ast
import bisect
import functools
import hashlib
import importlib.util
import io
import itertools
import json
import random
import re
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

# A snippet an editor holds is what the engine reads back out of a prompt: one type for both.
from fimgate.engines.editor_context import ContextFile as Snippet

PREFIX_CHARS = 1500  # Continue-sized windows
SUFFIX_CHARS = 500
SNIPPET_LINES = 30  # a definition an editor holds: its first lines
SNIPPET_CHARS = 1200
SNIPPETS_PER_TASK = 2
MIN_LINE = 10  # a hole needs some file before it

PYTHON_PACKAGES = (
    "httpx", "starlette", "click", "rich", "pydantic", "fastapi", "alembic", "uvicorn",
    "redis", "anyio", "httpcore", "sqlalchemy",
)  # fmt: skip
# npm packages with hand-written sources (not compiled output), and where those lie.
NODE_PACKAGES = {
    "ts": (
        ("openai", "src"), ("@anthropic-ai/sdk", "src"), ("zod", "src"),
        ("@continuedev/config-yaml", "src"), ("@continuedev/openai-adapters", "src"),
        ("@continuedev/fetch", "src"),
    ),
    "js": (
        ("ws", "lib"), ("protobufjs", "src"), ("debug", "src"), ("follow-redirects", ""),
        ("node-fetch", "src"), ("json-bigint", "lib"), ("jsondiffpatch", "lib"),
        ("gaxios", "build/src"),
    ),
}  # fmt: skip
NODE_MODULES = Path(__file__).resolve().parents[1] / "tests" / "continue" / "node_modules"
# Tasks per language in the full set (the headline figure), and the share that is cross-file.
COUNTS = {"py": 168, "ts": 100, "js": 72}
CROSS_FILE_SHARE = 0.4
MULTI_LINE_SHARE = 0.4


@dataclass(frozen=True)
class HoleTask:
    name: str  # language:package:path:line:kind, unique
    language: str  # py, ts, js
    kind: str  # single, multi
    repo: str  # the package, as an editor's workspace name
    path: str  # the file, relative to the package's root
    prefix: str
    suffix: str
    expected: str  # the hole's text
    snippets: tuple[Snippet, ...] = ()
    # The name from another file the hole uses (its definition is the last snippet).
    cross_name: str = ""
    comment_mark: str = "#"

    @property
    def cross_file(self) -> bool:
        return bool(self.cross_name)


@dataclass
class _Source:
    """One file: its lines, which of them may be holes, and the names it imports."""

    path: str
    lines: list[str]
    eligible: list[int]
    imports: dict[str, Snippet] = field(default_factory=dict)  # name -> its definition
    import_lines: set[int] = field(default_factory=set)
    uses: dict[str, list[int]] = field(default_factory=dict)  # name -> lines using it
    offsets: list[int] = field(default_factory=list)  # where each line starts, in chars

    def index(self) -> None:
        """Where each imported name is used (outside imports), and where lines start."""
        self.offsets = list(itertools.accumulate((len(x) + 1 for x in self.lines), initial=0))
        for name in self.imports:
            word = re.compile(rf"\b{re.escape(name)}\b")
            self.uses[name] = [
                i
                for i, line in enumerate(self.lines)
                if name in line and i not in self.import_lines and word.search(line)
            ]

    def window_start(self, index: int) -> int:
        """The first line of the window before line ``index`` (whole lines, PREFIX_CHARS)."""
        return bisect.bisect_left(self.offsets, self.offsets[index] - PREFIX_CHARS, hi=index)


# -- tasks -------------------------------------------------------------------------------------


def load(
    languages: Iterable[str] = ("py", "ts", "js"),
    counts: dict[str, int] | None = None,
    node_modules: Path = NODE_MODULES,
) -> list[HoleTask]:
    """The benchmark's tasks, in a fixed order (languages, then packages round-robin)."""
    counts = counts or COUNTS
    tasks: list[HoleTask] = []
    for language in languages:
        if language == "py":
            packages = [(name, _python_root(name)) for name in PYTHON_PACKAGES]
        else:
            packages = [
                (name, node_modules / name / sub)
                for name, sub in NODE_PACKAGES[language]
                if (node_modules / name).is_dir()
            ]
        packages = [(name, root) for name, root in packages if root is not None]
        if not packages:
            continue
        per_package = _spread(counts[language], len(packages))
        for (name, root), want in zip(packages, per_package, strict=True):
            tasks += _package_tasks(language, name, root, want)
    return tasks


def versions(tasks: Iterable[HoleTask]) -> dict[str, str]:
    """The version of each package the tasks were cut from."""
    found: dict[str, str] = {}
    for task in tasks:
        if task.repo in found:
            continue
        try:
            found[task.repo] = metadata.version(task.repo)
        except metadata.PackageNotFoundError:
            package = NODE_MODULES / task.repo / "package.json"
            found[task.repo] = (
                json.loads(package.read_text()).get("version", "?") if package.exists() else "?"
            )
    return found


def quick(tasks: list[HoleTask], n: int) -> list[HoleTask]:
    """An evenly spread subset of ``n`` tasks (every k-th), for development runs."""
    if n >= len(tasks):
        return tasks
    step = len(tasks) / n
    return [tasks[int(i * step)] for i in range(n)]


def _spread(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def _python_root(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _package_tasks(language: str, package: str, root: Path, want: int) -> list[HoleTask]:
    rng = random.Random(int(hashlib.sha256(package.encode()).hexdigest()[:8], 16))
    sources = list(_sources(language, root))
    cross: list[tuple[_Source, int, str]] = []
    plain: list[tuple[_Source, int]] = []
    for source in sources:
        for index in source.eligible:
            name = _cross_name(source, index)
            if name:
                cross.append((source, index, name))
            else:
                plain.append((source, index))
    rng.shuffle(cross)
    rng.shuffle(plain)
    want_cross = min(len(cross), round(want * CROSS_FILE_SHARE))
    tasks: list[HoleTask] = []
    used: dict[str, int] = {}  # holes per file: spread over files
    for pool, target in ((cross, want_cross), (plain, want)):
        for item in pool:
            if len(tasks) >= target:
                break
            source, index = item[0], item[1]
            if used.get(source.path, 0) >= 3 or _near_used(tasks, source.path, index):
                continue
            name = item[2] if len(item) == 3 else None  # type: ignore[misc]
            task = _cut(language, package, source, index, name, rng)
            if task:
                tasks.append(task)
                used[source.path] = used.get(source.path, 0) + 1
    return tasks


def _near_used(tasks: list[HoleTask], path: str, index: int) -> bool:
    # Two holes of one file at least 20 lines apart: different windows.
    return any(t.path == path and abs(int(t.name.split(":")[3]) - index) < 20 for t in tasks)


def _cross_name(source: _Source, index: int) -> str | None:
    """An imported name the line uses, absent from the window before it (but in imports)."""
    if index in source.import_lines:
        return None
    start = source.window_start(index)
    for name, uses in source.uses.items():
        at = bisect.bisect_left(uses, start)
        if at < len(uses) and uses[at] == index:
            return name  # used here first: nothing in the window before it
    return None


def _window_lines(source: _Source, index: int) -> range:
    return range(source.window_start(index), index)


def _cut(
    language: str,
    package: str,
    source: _Source,
    index: int,
    cross_name: str | None,
    rng: random.Random,
) -> HoleTask | None:
    lines = source.lines
    line = lines[index]
    indent = len(line) - len(line.lstrip())
    kind = "multi" if rng.random() < MULTI_LINE_SHARE else "single"
    if kind == "multi":
        count = rng.randint(2, 4)
        block = list(range(index, min(index + count, len(lines))))
        if len(block) < 2 or any(_blank_or_comment(lines[i]) for i in block[1:]):
            kind = "single"
    if kind == "multi":
        cursor = indent
        last = block[-1]
    else:
        cursor = _cursor(line, indent, cross_name, rng)
        last = index
    if cursor is None:
        return None
    expected = "\n".join([line[cursor:], *lines[index + 1 : last + 1]])
    before = "".join(f"{lines[i]}\n" for i in _window_lines(source, index))
    after = lines_after(lines, last)
    snippets = _snippets(source, index, cross_name)
    return HoleTask(
        name=f"{language}:{package}:{source.path}:{index}:{kind}",
        language=language,
        kind=kind,
        repo=package,
        path=source.path,
        prefix=before + line[:cursor],
        suffix=after,
        expected=expected,
        snippets=snippets,
        cross_name=cross_name or "",
        comment_mark="#" if language == "py" else "//",
    )


def lines_after(lines: list[str], index: int) -> str:
    """The window after line ``index``: whole lines within SUFFIX_CHARS, each after a newline."""
    after, size = "", 0
    for following in lines[index + 1 :]:
        size += len(following) + 1
        if size > SUFFIX_CHARS:
            break
        after += f"\n{following}"
    return after


def _cursor(line: str, indent: int, keep: str | None, rng: random.Random) -> int | None:
    """Where the cursor stands in a single-line hole: the line's indentation half the time,
    else just after a separator inside it, leaving at least 4 characters to write (and, for
    a cross-file hole, the imported name)."""
    limit = len(line) - 4
    if keep:
        limit = min(limit, re.search(rf"\b{re.escape(keep)}\b", line).start())  # type: ignore[union-attr]
    inside = [
        i for i in range(indent + 1, limit + 1) if line[i - 1] in " .(=[,:{" and line[i] != " "
    ]
    if not inside or rng.random() < 0.5:
        return indent
    return rng.choice(inside)


def _snippets(source: _Source, index: int, cross_name: str | None) -> tuple[Snippet, ...]:
    """Definitions of imported names used nearest the cursor, the cross-file one last (the
    most recent, as Continue orders them)."""
    near: list[tuple[int, str]] = []
    for name, uses in source.uses.items():
        distances = [abs(i - index) for i in uses if index - 40 <= i < index + 10]
        if name != cross_name and distances:
            near.append((min(distances), name))
    chosen = [name for _, name in sorted(near)][: SNIPPETS_PER_TASK - (cross_name is not None)]
    if cross_name:
        chosen.append(cross_name)
    seen: set[Snippet] = set()
    out = []
    for name in chosen:
        snippet = source.imports[name]
        if snippet not in seen:
            seen.add(snippet)
            out.append(snippet)
    return tuple(out)


# -- files -------------------------------------------------------------------------------------


def _sources(language: str, root: Path) -> Iterator[_Source]:
    if language == "py":
        files = sorted(root.rglob("*.py"))
        base = root.parent
    else:
        suffixes = (".ts",) if language == "ts" else (".js", ".cjs", ".mjs")
        files = sorted(
            f
            for f in root.rglob("*")
            if f.suffix in suffixes
            and "node_modules" not in f.relative_to(root).parts
            and _hand_written(f, language)
        )
        base = _package_root(root)
    for file in files:
        if file.stat().st_size > 150_000 or "test" in file.name.lower():
            continue
        text = file.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        if len(lines) < 40 or max(map(len, lines)) > 400:
            continue
        source = _Source(str(file.relative_to(base)), lines, [])
        if language == "py":
            source.eligible = _python_eligible(text, lines)
            _python_imports(source, file, root)
        else:
            source.eligible = _js_eligible(lines)
            _js_imports(source, file)
        source.index()
        if source.eligible:
            yield source


def _package_root(root: Path) -> Path:
    while not (root / "package.json").exists() and root.parent != root:
        root = root.parent
    return root


def _hand_written(file: Path, language: str) -> bool:
    if file.name.endswith((".d.ts", ".min.js")) or "dist" in file.parts:
        return False
    if language == "js":
        head = file.read_text(encoding="utf-8", errors="replace")[:2000]
        # Compiled TypeScript or bundler output is not what anyone types.
        if "__esModule" in head or "sourceMappingURL" in head or "__awaiter" in head:
            return False
    return True


def _blank_or_comment(text: str) -> bool:
    return not text.strip() or text.strip().startswith(("#", "//", "/*", "*"))


# A name re-exported as itself (``type Foo as Foo,``): a list, not code anyone writes.
RE_EXPORT = re.compile(r"^\s*(type\s+)?(\w+)\s+as\s+\2,?\s*$")


def _plausible(text: str) -> bool:
    stripped = text.strip()
    return (
        8 <= len(stripped) <= 120
        and not RE_EXPORT.match(text)
        and len(re.findall(r"[A-Za-z_]", stripped)) >= 4
        and not stripped.startswith(("#", "//", "/*", "*", '"""', "'''"))
    )


def _python_eligible(text: str, lines: list[str]) -> list[int]:
    in_string: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.STRING and token.end[0] > token.start[0]:
                in_string.update(range(token.start[0] - 1, token.end[0]))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return []
    return [i for i in range(MIN_LINE, len(lines)) if i not in in_string and _plausible(lines[i])]


def _js_eligible(lines: list[str]) -> list[int]:
    eligible, in_comment = [], False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if in_comment:
            in_comment = "*/" not in stripped
            continue
        if stripped.startswith("/*") and "*/" not in stripped:
            in_comment = True
            continue
        if i >= MIN_LINE and "`" not in line and _plausible(line):
            eligible.append(i)
    return eligible


# -- imports and their definitions -------------------------------------------------------------


def _python_imports(source: _Source, file: Path, root: Path) -> None:
    parsed = _parsed(file)
    if parsed is None:
        return
    for node in ast.walk(parsed[1]):
        if not isinstance(node, ast.ImportFrom):
            continue
        source.import_lines.update(range(node.lineno - 1, (node.end_lineno or node.lineno)))
        target = _python_module(file, root, node.module, node.level)
        if target is None:
            continue
        for alias in node.names:
            if alias.name == "*" or alias.asname:
                continue
            definition = _python_definition(target, alias.name, root)
            if definition:
                source.imports[alias.name] = definition


def _python_module(file: Path, root: Path, module: str | None, level: int) -> Path | None:
    if level:
        base = file.parent
        for _ in range(level - 1):
            base = base.parent
        parts = module.split(".") if module else []
    else:
        if not module or module.split(".")[0] != root.name:
            return None
        base, parts = root.parent, module.split(".")
    path = base.joinpath(*parts)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file() and candidate.is_relative_to(root):
            return candidate
    return None


def _python_definition(file: Path, name: str, root: Path, depth: int = 0) -> Snippet | None:
    """The top-level definition of ``name`` in ``file``, following re-exports."""
    parsed = _parsed(file)
    if parsed is None:
        return None
    lines, module = parsed
    for node in module.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == name:
                start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
                return _snippet(file, root.parent, lines[start : node.end_lineno])
        elif (
            isinstance(node, ast.ImportFrom)
            and depth < 3
            and any(a.name == name and not a.asname for a in node.names)
        ):
            target = _python_module(file, root, node.module, node.level)
            return _python_definition(target, name, root, depth + 1) if target else None
    return None


@functools.lru_cache(maxsize=512)
def _parsed(file: Path) -> tuple[list[str], ast.Module] | None:
    try:
        text = file.read_text(encoding="utf-8")
        return text.split("\n"), ast.parse(text)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None


def _snippet(file: Path, base: Path, lines: list[str]) -> Snippet:
    kept, size = [], 0
    for line in lines[:SNIPPET_LINES]:
        size += len(line) + 1
        if size > SNIPPET_CHARS:
            break
        kept.append(line)
    return Snippet(str(file.relative_to(base)), "\n".join(kept).rstrip())


JS_IMPORT = re.compile(
    r"""^\s*import\s+(?:type\s+)?\{([^}]*)\}\s*from\s*['"](\.[^'"]+)['"]"""
    r"""|^\s*(?:const|let|var)\s+\{([^}]*)\}\s*=\s*require\(\s*['"](\.[^'"]+)['"]\s*\)""",
    re.MULTILINE,
)


def _js_imports(source: _Source, file: Path) -> None:
    text = "\n".join(source.lines)
    base = _package_root(file.parent)
    for match in JS_IMPORT.finditer(text):
        names, target = (match.group(1), match.group(2)) if match.group(2) else match.group(3, 4)
        first = text.count("\n", 0, match.start())
        last = text.count("\n", 0, match.end())
        source.import_lines.update(range(first, last + 1))
        resolved = _js_module(file.parent, target)
        if resolved is None:
            continue
        for part in names.split(","):
            part = part.strip().removeprefix("type ").strip()
            if not part or " as " in part or ":" in part:
                continue
            definition = _js_definition(resolved, part, base)
            if definition:
                source.imports[part] = definition


def _js_module(folder: Path, target: str) -> Path | None:
    path = (folder / target).resolve()
    stem = path.with_suffix("") if path.suffix in (".js", ".mjs", ".cjs", ".ts") else path
    for candidate in (
        path, stem.with_suffix(".ts"), stem.with_suffix(".js"), stem / "index.ts", stem / "index.js"
    ):  # fmt: skip
        if candidate.is_file():
            return candidate
    return None


def _js_definition(file: Path, name: str, base: Path) -> Snippet | None:
    lines = file.read_text(encoding="utf-8", errors="replace").split("\n")
    pattern = re.compile(
        rf"^(export\s+)?(default\s+)?(declare\s+)?(abstract\s+)?(async\s+)?"
        rf"(function\*?|class|interface|type|const|let|var|enum)\s+{re.escape(name)}\b"
    )
    for i, line in enumerate(lines):
        if pattern.match(line):
            end, depth = i, 0
            for j in range(i, min(len(lines), i + 200)):
                depth += lines[j].count("{") - lines[j].count("}")
                end = j
                if depth <= 0 and ("}" in lines[j] or lines[j].rstrip().endswith(";")):
                    break
            return _snippet(file, base, lines[i : end + 1])
    return None
