"""HumanEval single-line infilling (OpenAI's human-eval-infilling): one line of a HumanEval
solution is the hole. Scored two ways:

- exact match: the completion's line, stripped, against the stripped canonical line;
- pass@1: ``prompt + completion + suffix + "\\n" + test + "\\n" + check(entry_point)`` run
  as the original harness runs it (3 s), in the sandbox (``sandbox.py``). The completion is
  inserted verbatim, as an editor would insert it: text it writes past the hole (the suffix
  typed again, chat) breaks the program, which is what this measures.

Read in place from ``humaneval-infilling/`` under the data folder.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from fimgate_eval.humaneval_fim import answer_line

FILES = {
    "single-line": "HumanEval-SingleLineInfilling.jsonl.gz",
    "smoke": "single-line-smoke.jsonl",  # 20 records from 20 problems
}


@dataclass(frozen=True)
class InfillTask:
    name: str
    prefix: str
    suffix: str
    expected: str  # the canonical line, with its indentation and newline
    test: str
    entry_point: str


def load(data_dir: Path, which: str = "single-line", limit: int | None = None) -> list[InfillTask]:
    """The first ``limit`` records of a set, in the file's order."""
    path = data_dir / "humaneval-infilling" / FILES[which]
    opener = gzip.open if path.suffix == ".gz" else open
    tasks = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            tasks.append(InfillTask(
                r["task_id"], r["prompt"], r["suffix"], r["canonical_solution"], r["test"],
                r["entry_point"],
            ))  # fmt: skip
            if limit is not None and len(tasks) >= limit:
                break
    return tasks


def exact(output: str, task: InfillTask) -> bool:
    return answer_line(output) == task.expected.strip()


def program(output: str, task: InfillTask) -> str:
    """The program whose exit status is pass@1, as the original harness builds it."""
    return f"{task.prefix}{output}{task.suffix}\n{task.test}\ncheck({task.entry_point})"
