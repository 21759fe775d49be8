"""What Continue sends as ``prompt`` and ``suffix`` to a Mistral-provider FIM endpoint, in each
of the prompt formats it picks from the configured model name
(``core/autocomplete/templating``; see ``../shared/notes/editors.md``):

- ``codestral`` (a name containing "codestral", as configs written for the hosted service
  have): other files' snippets as ``+++++ path \\n<text>`` blocks joined by blank lines, then
  ``+++++ current/path\\n`` and the prefix;
- ``qwen`` (a name containing "qwen" and "coder"): ``<|repo_name|>`` and ``<|file_sep|>``
  written as text, the current path followed by Continue's own
  ``<|system_separator_istruction_repository_level|>`` sentinel, then the prefix;
- ``comments`` (any other name): each snippet as ``# Path: a/b.py`` and its lines commented
  out, then the current path as a comment, then the prefix.

With no snippets the first two send the bare prefix. ``bare`` is the prefix and suffix alone,
as a client without editor context sends them. The benchmark sends each task in all four.
"""

from __future__ import annotations

from fimgate_eval.editor_holes import HoleTask

FORMATS = ("bare", "codestral", "qwen", "comments")
QWEN_SENTINEL = "<|system_separator_istruction_repository_level|>"


def render(task: HoleTask, wire: str) -> tuple[str, str]:
    """The ``(prompt, suffix)`` Continue sends for ``task`` in format ``wire``."""
    prefix, suffix = task.prefix, task.suffix
    snippets = task.snippets
    if wire == "bare":
        return prefix, suffix
    if wire == "codestral":
        if not snippets:
            return prefix, suffix
        others = "\n\n".join(f"+++++ {s.path} \n{s.text}" for s in snippets)
        return f"{others}\n\n+++++ {task.path}\n{prefix}", suffix
    if wire == "qwen":
        if not snippets:
            return prefix, suffix
        files = "\n".join(f"<|file_sep|>{s.path}\n{s.text}" for s in snippets)
        current = f"<|file_sep|>{task.path}{QWEN_SENTINEL}"
        return f"<|repo_name|>{task.repo}\n{files}\n{current}{prefix}", suffix
    if wire == "comments":
        mark = task.comment_mark

        def commented(text: str) -> str:
            return "\n".join(f"{mark} {line}" for line in text.strip().split("\n"))

        blocks = [commented(f"Path: {_last_parts(s.path)}\n{s.text}") for s in snippets]
        header = "\n".join(blocks) + f"\n{commented(_last_parts(task.path))}"
        return f"{header}\n{prefix}", suffix
    raise ValueError(f"unknown wire format {wire!r}; known: {', '.join(FORMATS)}")


def _last_parts(path: str, n: int = 2) -> str:
    return "/".join(path.split("/")[-n:])
