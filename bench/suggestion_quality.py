"""Does answering from a suggestion the user typed along lose anything? (engines/suggestions.py)

    python bench/suggestion_quality.py [MODEL] [--tasks 100]

Realistic editor holes (``fimgate eval --suite editor``, bare). For each, the editor asks at
the hole and gets a suggestion S (the stream closed once its lines are in, as the eval does).
The user then types the first half of the hole's first line. Where that is also how S starts,
the next request types along S: with suggestions on, the server answers with the rest of S
(and goes on from its end); with them off, the model answers the new prompt afresh. Both are
scored against the hole (exact first line, edit similarity), pair by pair.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import httpx

from fimgate_eval import editor_holes, editor_suite
from fimgate_eval.editor_holes import HoleTask
from fimgate_eval.runner import Completion, Endpoint, started_server


def typed_half(task: HoleTask) -> str:
    line = task.expected.split("\n")[0]
    return line[: max(1, len(line) // 2)]


def went_on(client: httpx.Client, endpoint: Endpoint) -> int:
    stats = next(iter(client.get(f"{endpoint.url}/health").json()["models"].values()))
    return stats.get("went_on", 0)


def second_requests(
    model: str, tasks: list[HoleTask], suggestions: bool
) -> tuple[dict[str, Completion], int]:
    """The first request of every task (suggestions on only: they are what is typed along)
    and the request after the typed half; how many of those went on from a suggestion."""
    setting = {"FIMGATE_SUGGESTIONS": str(suggestions).lower()}
    answers: dict[str, Completion] = {}
    with started_server(model, None, setting) as endpoint, httpx.Client(timeout=600) as client:
        client.headers["Authorization"] = f"Bearer {endpoint.key}"
        before = went_on(client, endpoint)
        for task in tasks:
            typed = typed_half(task)
            if suggestions:
                first = editor_suite.served(client, endpoint, task, "bare").text
                if not first.startswith(typed):
                    continue
            moved = replace(task, prefix=task.prefix + typed, expected=task.expected[len(typed) :])
            answers[task.name] = editor_suite.served(client, endpoint, moved, "bare")
        return answers, went_on(client, endpoint) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default="qwen2.5-coder-0.5b")
    parser.add_argument("--tasks", type=int, default=100)
    args = parser.parse_args()
    tasks = editor_holes.quick(editor_holes.load(["py", "ts", "js"]), args.tasks)
    started = time.perf_counter()
    on, used = second_requests(args.model, tasks, suggestions=True)
    typed_along = [t for t in tasks if t.name in on]
    off, _ = second_requests(args.model, typed_along, suggestions=False)
    rows = []
    for task in typed_along:
        typed = typed_half(task)
        moved = replace(task, prefix=task.prefix + typed, expected=task.expected[len(typed) :])
        a, b = on[task.name], off[task.name]
        scores = [f(x.text, moved) for f in (editor_suite.exact, editor_suite.edit_similarity)
                  for x in (a, b)]  # fmt: skip
        rows.append((task, *scores, a.seconds, b.seconds))
    n = len(rows)
    print(f"{args.model}: {len(tasks)} holes; the suggestion starts with the typed half on {n}; "
          f"{used} of those answered from it ({time.perf_counter() - started:.0f} s)")  # fmt: skip
    if not n:
        return
    exact_on, exact_off = sum(r[1] for r in rows), sum(r[2] for r in rows)
    only_on = sum(r[1] and not r[2] for r in rows)
    only_off = sum(r[2] and not r[1] for r in rows)
    print(f"  exact first line: from the suggestion {exact_on}/{n}, afresh {exact_off}/{n} "
          f"(+{only_on}/-{only_off})")  # fmt: skip
    es_on, es_off = sum(r[3] for r in rows) / n, sum(r[4] for r in rows) / n
    print(f"  edit similarity: {es_on:.1f} vs {es_off:.1f}")
    secs = sorted(r[5] or 0 for r in rows), sorted(r[6] or 0 for r in rows)
    print(f"  seconds to the scored lines, p50: {secs[0][n // 2]:.2f} vs {secs[1][n // 2]:.2f}")
    for task, a, b, *_ in rows:
        if a != b:
            print(f"  {'lost' if b else 'won'}: {task.name}\n"
                  f"    from the suggestion: {on[task.name].text[:70]!r}\n"
                  f"    afresh:              {off[task.name].text[:70]!r}")  # fmt: skip


if __name__ == "__main__":
    main()
