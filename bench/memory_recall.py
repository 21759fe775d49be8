"""How often editor memory gives a cross-file hole the definition it needs, without a model.

For each task of the editor suite, the editing session ``fimgate eval --suite editor --wires
session`` sends (fimgate_eval/editor_session.py: the definitions' files and distractors) is
remembered as the server remembers it, then the hole's window asks for chunks, as the
prompt builder does (its token budget taken at 3.5 chars a token). Printed per chunk size,
budget and score floor: cross-file holes whose prompt gets the definition's chunk, and how
many chunks the other holes get (what memory adds where they need nothing from another
file), those that use imported names (Continue would send snippets) and those that do not.

    python bench/memory_recall.py [--chunk-lines 8,12,16,24] [--tokens 512,768,1024]
                                  [--floors 3]
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from fimgate.engines import context_memory
from fimgate.engines.context_memory import ContextMemory, Scope
from fimgate.engines.prompt_builder import MEMORY_CHARS_PER_TOKEN
from fimgate_eval import editor_holes, editor_session


def _place(prefix: str) -> str:
    return prefix.split("\n", 1)[0]  # a window without a path: its first line (prompt_builder)


def measure(tasks: list, sessions: list, budget: int) -> dict[str, float]:
    found = cross = other = other_chunks = other_chars = bare = bare_chunks = 0
    for task, visits in zip(tasks, sessions, strict=True):
        memory, scope = ContextMemory(), Scope(1, "key")
        for visit in visits:
            memory.remember(scope, _place(visit.prefix), "", visit.prefix + visit.suffix)
        window = task.prefix + task.suffix
        memory.remember(scope, _place(task.prefix), "", window)
        got = memory.recall(scope, _place(task.prefix), window, budget)
        if task.cross_file:
            cross += 1
            head = task.snippets[-1].text.split("\n", 1)[0]
            found += any(task.cross_name in c.defines or head in c.text for c in got)
        else:
            other += 1
            other_chunks += len(got)
            other_chars += sum(c.size for c in got)
            if not task.snippets:
                bare += 1
                bare_chunks += len(got)
    return {
        "cross": cross, "found": found, "other": other,
        "other_chunks": other_chunks / max(1, other), "other_chars": other_chars / max(1, other),
        "used_chunks": (other_chunks - bare_chunks) / max(1, other - bare),
        "unused_chunks": bare_chunks / max(1, bare),
    }  # fmt: skip


@click.command()
@click.option("--chunk-lines", default="8,12,16,24", show_default=True)
@click.option("--tokens", default="512,768,1024", show_default=True)
@click.option("--floors", default=str(context_memory.MIN_SCORE), show_default=True)
def main(chunk_lines: str, tokens: str, floors: str) -> None:
    tasks = editor_holes.load()
    sessions = [editor_session.visits(task) for task in tasks]
    table = Table(title=f"editor memory, {len(tasks)} editor holes after their sessions")
    for column in ("chunk lines", "budget (tokens)", "floor", "cross-file: definition given",
                   "%", "other holes: chunks", "chars", "using imported names: chunks",
                   "using none: chunks"):  # fmt: skip
        table.add_column(column)
    default = context_memory.CHUNK_LINES, context_memory.MIN_SCORE
    try:
        for lines in map(int, chunk_lines.split(",")):
            context_memory.CHUNK_LINES = lines
            for budget in map(int, tokens.split(",")):
                for floor in map(float, floors.split(",")):
                    context_memory.MIN_SCORE = floor
                    m = measure(tasks, sessions, int(budget * MEMORY_CHARS_PER_TOKEN))
                    table.add_row(
                        str(lines), str(budget), f"{floor:g}", f"{m['found']}/{m['cross']}",
                        f"{100 * m['found'] / max(1, m['cross']):.1f}",
                        f"{m['other_chunks']:.2f}", f"{m['other_chars']:.0f}",
                        f"{m['used_chunks']:.2f}", f"{m['unused_chunks']:.2f}",
                    )  # fmt: skip
    finally:
        context_memory.CHUNK_LINES, context_memory.MIN_SCORE = default
    Console().print(table)


if __name__ == "__main__":
    main()
