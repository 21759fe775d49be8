"""``fimgate eval --suite editor``: holes cut from real multi-file code, in Continue's windows
and wire formats, the served default beside llama.cpp fed the model's own full prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from fimgate import modelpack
from fimgate.settings import EngineSettings, StoreSettings
from fimgate_eval import editor_holes, editor_suite
from fimgate_eval.continue_wire import FORMATS
from fimgate_eval.direct import DirectLlama
from fimgate_eval.journal import Journal
from fimgate_eval.runner import Completion, started_server

SUBSETS = {
    "all": lambda r: True,
    "with snippets": lambda r: r["snippets"] > 0,
    "cross-file": lambda r: r["cross_file"],
    "not cross-file": lambda r: not r["cross_file"],
    # Where the hole starts (records of earlier runs carry no position: left out).
    **{
        where: (lambda r, where=where: r.get("position") == where)
        for where in ("line start", "after indentation", "mid-line")
    },
}


def editor_eval(
    models: list[str], languages: list[str], limit: int | None, wires: list[str],
    passed_through: bool, cross_file: bool, threads: int | None, json_path: Path | None,
    resume: bool, ceilings: bool = True, other_holes: bool = False,
    names: set[str] | None = None,
) -> None:  # fmt: skip
    session = editor_suite.SESSION
    known = (*FORMATS, *editor_suite.ROUTES, session, *(f"{session}-{f}" for f in FORMATS))
    unknown = [w for w in wires if w not in known]
    if unknown:
        raise click.UsageError(f"unknown wire format(s) {unknown}; choose from {known}")
    console = Console(stderr=True)
    console.print("cutting the tasks from the installed packages...")
    tasks = editor_holes.load(languages)
    if cross_file or other_holes:
        tasks = [task for task in tasks if task.cross_file == cross_file]
    if names is not None:
        unknown_names = names - {task.name for task in tasks}
        if unknown_names:
            raise click.UsageError(
                f"--tasks names {len(unknown_names)} task(s) not among those chosen (languages, "
                f"--cross-file, --other-holes): {', '.join(sorted(unknown_names)[:3])}"
            )
        tasks = [task for task in tasks if task.name in names]
    if limit:
        tasks = editor_holes.quick(tasks, limit)
    ways = editor_suite.ways_for(wires, passed_through, ceilings)
    results: dict[str, Any] = {"versions": editor_holes.versions(tasks), "models": {}}
    for model in models:
        rows, seconds = _run_model(model, tasks, ways, threads, json_path, resume, console)
        results["models"][model] = {"seconds": round(seconds, 1), "records": rows}
        Console(width=max(Console().width, 120)).print(table(model, rows, ways))
    if json_path:
        editor_suite.save(json_path, results)


def _run_model(
    model: str, tasks: list[editor_holes.HoleTask], ways: list[editor_suite.Way],
    threads: int | None, json_path: Path | None, resume: bool, console: Console,
) -> tuple[list[dict[str, Any]], float]:  # fmt: skip
    """One model's completions (the journal's, and the rest made now), as scored records."""
    path = modelpack.locate(model, StoreSettings().data_dir)
    journal_path = json_path.with_suffix(f".{model}.partial.jsonl") if json_path else None
    journal = Journal(journal_path, model, resume)
    made = dict(journal.made)
    todo = sum(1 for t in tasks for w in ways if w.applies(t) and (w.key, t.name) not in made)
    if todo:
        with started_server(model, threads) as endpoint, Progress(console=console) as progress:
            llama = DirectLlama(path, threads or EngineSettings().threads)
            bar = progress.add_task(f"{model}: editor holes", total=todo)

            def finished(key: str, task: editor_holes.HoleTask, done: Completion) -> None:
                journal.add(key, task.name, done)
                made[key, task.name] = done
                progress.advance(bar)

            try:
                editor_suite.run(endpoint, llama, tasks, ways, made, finished)
            finally:
                llama.close()
    return list(editor_suite.records(tasks, ways, made)), journal.seconds()


def baseline(key: str) -> str:
    """What a way is measured against: the ceiling given the same context."""
    wire = key.split(":", 1)[1]
    sent = editor_suite.after_session(wire)
    if sent:  # what memory adds: the same task sent the same way, without a session
        return f"served:{sent}"
    return "ceiling:bare" if wire in editor_suite.BARE else "ceiling:repo"


def table(model: str, rows: list[dict[str, Any]], ways: list[editor_suite.Way]) -> Table:
    out = Table(title=f"Editor holes, {model}: served default vs llama.cpp straight")
    for column in ("tasks", "way", "n", "exact %", "vs its ceiling", "ES", "tokens", "s/task"):
        out.add_column(column)
    for subset, keep in SUBSETS.items():
        chosen = [r for r in rows if keep(r)]
        for way in ways:
            s = editor_suite.summary(chosen, way.key)
            if s is None:
                continue
            delta = "-"
            if way.side != "ceiling":
                p = editor_suite.paired(chosen, way.key, baseline(way.key))
                if p:
                    delta = f"{p['exact_a'] - p['exact_b']:+.1f} (+{p['only_a']}/-{p['only_b']})"
            out.add_row(
                subset, way.key, str(s["tasks"]), f"{s['exact']:.1f}", delta, f"{s['es']:.1f}",
                f"{s['tokens']:.1f}", f"{s['seconds']:.2f}",
            )  # fmt: skip
    return out
