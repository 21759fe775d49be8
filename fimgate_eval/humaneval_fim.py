"""HumanEval-FIM (multilingual: Python, Java, JavaScript), scored as the Qwen2.5-Coder report
scores it: greedy, at most 64 new tokens, the first line of the output (the second when the
output starts with a newline, since the newline before the hole is usually not in the
prompt), stripped, against the stripped canonical line.

The data is read where it lies (``humaneval-fim-multilingual/humaneval_fim_{lang}.jsonl.gz``
under the data folder), never copied into the project.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

LANGUAGES = {"py": "Python", "java": "Java", "js": "JavaScript"}
MAX_TOKENS = 64
# The report's prompt budget, in tokens: an evaluating server must not cut the suffix shorter.
PREFIX_TOKENS, SUFFIX_TOKENS = 1472, 512


@dataclass(frozen=True)
class Task:
    name: str
    prefix: str
    suffix: str
    expected: str  # the canonical middle line


def load(data_dir: Path, language: str, limit: int | None = None) -> list[Task]:
    """The first ``limit`` records of one language, in the file's order."""
    path = data_dir / "humaneval-fim-multilingual" / f"humaneval_fim_{language}.jsonl.gz"
    tasks = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            tasks.append(Task(r["name"], r["prompt"], r["suffix"], r["canonical_solution"]))
            if limit is not None and len(tasks) >= limit:
                break
    return tasks


def answer_line(output: str) -> str:
    """The line of a completion that is scored."""
    lines = output.split("\n")
    return (lines[1] if output.startswith("\n") and len(lines) > 1 else lines[0]).strip()


def exact(output: str, task: Task) -> bool:
    return answer_line(output) == task.expected.strip()
