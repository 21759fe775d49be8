"""Other files an editor put in the prompt, read back out of Continue's three formats.

Continue picks a prompt format from the model name its user configured and writes other
files' snippets into ``prompt`` as text (``../shared/notes/editors.md``):

- **codestral** (a name with "codestral", what configs written for the hosted service use):
  ``+++++ a/b.py \\n<text>\\n\\n+++++ c/d.py \\n<text>\\n\\n+++++ current/path\\n<prefix>``
  (older releases: no space after a snippet's path, ``[PREFIX]`` before the prefix);
- **qwen** (a name with "qwen" and "coder"): ``<|repo_name|>repo\\n<|file_sep|>a/b.py\\n<text>
  \\n<|file_sep|>current/path<|system_separator_istruction_repository_level|><prefix>``
  (older releases: the whole FIM prompt, ``<|fim_prefix|>...<|fim_middle|>``, after the last
  snippet, with an empty suffix);
- **comments** (any other name): ``# Path: a/b.py`` and each line of the snippet commented
  out, then the current path as a comment (``#``, ``//``, ``--`` ... by language), then the
  prefix.

Sent on as text, the model sees none of it in the format it was trained on. ``recognize``
gives the files, the current path and the real prefix and suffix, so the engine can lay them
out in the model's own repository format, its markers as special tokens and every byte of
the user's text still tokenized as text. A prompt in none of these formats is not touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ContextFile:
    path: str
    text: str


@dataclass(frozen=True)
class EditorContext:
    wire: str  # the format it came in: codestral, qwen, comments
    repo: str  # the workspace's name ("" when the format has none)
    files: tuple[ContextFile, ...]
    path: str  # the current file ("" when the format does not say)
    prefix: str
    suffix: str


def recognize(prompt: str, suffix: str) -> EditorContext | None:
    """The editor context in ``prompt``, or None when it is in none of Continue's formats."""
    for read in (_codestral, _qwen, _comments):
        found = read(prompt, suffix)
        if found is not None:
            return found
    return None


# -- codestral ---------------------------------------------------------------------------------

# A block header: at the start or after a blank line; a snippet's path ends with a space.
_CODESTRAL_HEADER = re.compile(r"(?:^|\n\n)\+\+\+\+\+ ([^\n]+)\n")


def _codestral(prompt: str, suffix: str) -> EditorContext | None:
    if not prompt.startswith("+++++ "):
        return None
    headers = list(_CODESTRAL_HEADER.finditer(prompt))
    paths = [h.group(1).strip() for h in headers]
    if not all(_path_like(p) for p in paths):
        return None
    files = tuple(
        ContextFile(path, prompt[header.end() : following.start()])
        for path, header, following in zip(paths, headers, headers[1:], strict=False)
    )
    prefix = prompt[headers[-1].end() :]
    # An empty file with no snippets: "+++++ path\n\n[PREFIX]\n"; older releases put
    # "[PREFIX]" before every prefix.
    for marker in ("\n[PREFIX]\n", "[PREFIX]"):
        if prefix.startswith(marker):
            prefix = prefix[len(marker) :]
            break
    return EditorContext("codestral", "", files, paths[-1], prefix, suffix)


# -- qwen --------------------------------------------------------------------------------------

QWEN_SENTINEL = "<|system_separator_istruction_repository_level|>"
_FILE_SEP = "<|file_sep|>"
# Continue joins files with newlines: a file begins where a line begins with the marker. A
# snippet that holds the marker inside a line (a string, a comment) keeps it as its text.
_FILE_START = re.compile(r"(?:^|\n)<\|file_sep\|>")
_FIM = re.compile(r"<\|fim_prefix\|>(.*?)<\|fim_suffix\|>(.*)<\|fim_middle\|>\Z", re.DOTALL)


def _qwen(prompt: str, suffix: str) -> EditorContext | None:
    if not prompt.startswith("<|repo_name|>"):
        return None
    repo, newline, rest = prompt[len("<|repo_name|>") :].partition("\n")
    if not newline or not rest.startswith(_FILE_SEP):
        return None
    if QWEN_SENTINEL in rest:
        context, _, prefix = rest.partition(QWEN_SENTINEL)
        *snippets, path = _FILE_START.split(context)[1:]
    else:  # older releases: the FIM prompt itself after the last snippet, no suffix
        fim = _FIM.match(rest, max(0, rest.rfind("<|fim_prefix|>")))
        if fim is None or suffix:
            return None
        prefix, suffix = fim.group(1), fim.group(2)
        snippets, path = _FILE_START.split(rest[: fim.start()])[1:], ""
    files = []
    for block in snippets:
        name, _, text = block.partition("\n")
        if not _path_like(name):
            return None
        files.append(ContextFile(name, text))
    if path and not _path_like(path):
        return None
    return EditorContext("qwen", repo.strip(), tuple(files), path, prefix, suffix)


# -- comments ----------------------------------------------------------------------------------

# Line comment marks of the languages Continue knows.
_MARKS = ("//", "#", "--", ";", "%", "'")


def _comments(prompt: str, suffix: str) -> EditorContext | None:
    lines = prompt.split("\n")
    if lines[0] == "":  # no snippets: "\n# current/path\n<prefix>"
        mark = _mark_of(lines[1], path_only=True) if len(lines) > 2 else None
        if mark is None:
            return None
        path = _uncomment(lines[1], mark)
        return EditorContext("comments", "", (), path, "\n".join(lines[2:]), suffix)
    mark = _mark_of(lines[0], path_only=False)
    if mark is None:
        return None
    files: list[ContextFile] = []
    name, body = "", []
    for i, line in enumerate(lines):
        if not (line == mark or line.startswith(mark + " ")):
            return None  # the block ended before the current path: not this format
        text = _uncomment(line, mark)
        if text.startswith("Path: ") and _path_like(text[6:]):
            if name:
                files.append(ContextFile(name, "\n".join(body)))
            name, body = text[6:], []
        elif body and _path_like(text) and _is_current_path(text):
            # The first path after a snippet's lines is the current file's.
            files.append(ContextFile(name, "\n".join(body)))
            return EditorContext(
                "comments", "", tuple(files), text, "\n".join(lines[i + 1 :]), suffix
            )
        else:
            body.append(text)
    return None


def _mark_of(line: str, *, path_only: bool) -> str | None:
    for mark in _MARKS:
        if not line.startswith(mark + " "):
            continue
        text = line[len(mark) + 1 :]
        if path_only and _path_like(text) and _is_current_path(text):
            return mark
        if not path_only and text.startswith("Path: ") and _path_like(text[6:]):
            return mark
    return None


def _uncomment(line: str, mark: str) -> str:
    return line[len(mark) + 1 :] if line.startswith(mark + " ") else line[len(mark) :]


def _path_like(text: str) -> bool:
    """A file path as editors write them: no spaces, not empty, not absurdly long."""
    return 0 < len(text) <= 300 and not any(c.isspace() for c in text)


def _is_current_path(text: str) -> bool:
    # A path with a file extension ("dir/file.py"): a code line such as "foo()" is not one.
    return re.fullmatch(r"[\w@.+\-/\\]*[\w\-]\.[A-Za-z0-9]{1,10}", text) is not None
