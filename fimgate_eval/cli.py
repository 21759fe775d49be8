"""``fimgate eval``: completion quality on public FIM benchmarks, through the HTTP API."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from fimgate.engines.loading import CODESTRAL_ALIASES
from fimgate.modelpack import DEFAULT_MODEL
from fimgate_eval import humaneval_fim, humaneval_infilling
from fimgate_eval.cli_editor import editor_eval
from fimgate_eval.continue_wire import FORMATS
from fimgate_eval.journal import Journal
from fimgate_eval.runner import (
    HUMANEVAL_SETTINGS,
    Completion,
    Endpoint,
    FimTask,
    run,
    started_server,
)
from fimgate_eval.sandbox import run_program


@click.command("eval")
@click.option(
    "--suite", type=click.Choice(["humaneval", "editor"]), default="humaneval",
    show_default=True,
    help="humaneval: HumanEval-FIM and single-line infilling (needs --data); editor: holes "
    "cut from installed packages in Continue's windows and formats, beside llama.cpp fed the "
    "model's own full prompt.",
)  # fmt: skip
@click.option(
    "--data", "data_dir", type=click.Path(exists=True, path_type=Path),
    help="The evaluation data folder (e.g. ../shared/data); read in place, never copied.",
)  # fmt: skip
@click.option(
    "--languages",
    help="Languages, comma-separated: py, java, js for humaneval (all by default); py, ts, js "
    "for editor (all by default).",
)  # fmt: skip
@click.option(
    "--infilling",
    type=click.Choice(["single-line", "smoke", "none"]),
    default="single-line",
    show_default=True,
    help="HumanEval infilling set (exact match and pass@1); smoke: 20 records.",
)
@click.option(
    "--limit", type=int,
    help="humaneval: the first N records of each set; editor: N tasks spread over the set.",
)  # fmt: skip
@click.option("--url", help="A running fimgate (e.g. http://127.0.0.1:8000); default: start one.")
@click.option("--key", envvar="FIMGATE_API_KEY", help="API key for --url (or FIMGATE_API_KEY).")
@click.option(
    "--model", "models", multiple=True,
    help="The model to serve when starting one (default qwen2.5-coder-1.5b; editor: both "
    "packaged models, repeat to choose), or to ask --url for (default codestral-latest).",
)  # fmt: skip
@click.option(
    "--wires",
    default=",".join(FORMATS),
    show_default=True,
    help="editor: how each task is sent (bare, and Continue's codestral, qwen, comments; "
    "infill, completions: the bare task through /infill and /v1/completions; session: an "
    "editing session that visits other files first, then the task bare; session-qwen etc.: "
    "the session, then the task in that format).",
)
@click.option(
    "--passed-through",
    is_flag=True,
    help="editor: also feed llama.cpp Continue's text as it is (what a server that does not "
    "read the formats gives).",
)
@click.option(
    "--cross-file", is_flag=True,
    help="editor: only the cross-file tasks (the hole uses a name defined in another file), "
    "for the subset's figures without the rest of the set.",
)  # fmt: skip
@click.option(
    "--other-holes",
    is_flag=True,
    help="editor: only the tasks that are not cross-file (what memory must not cost).",
)
@click.option(
    "--tasks", "tasks_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="editor: only the tasks named in this file, one per line (the records' names).",
)  # fmt: skip
@click.option(
    "--no-ceiling",
    "no_ceiling",
    is_flag=True,
    help="editor: the served ways only, without llama.cpp fed the full prompt beside them.",
)
@click.option("--threads", type=int, help="CPU threads of the server it starts.")
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path),
    help="Write results here; completions go to FILE.partial.jsonl as they come.",
)  # fmt: skip
@click.option(
    "--resume", is_flag=True,
    help="Keep the completions in the --json file's .partial.jsonl and make only the rest.",
)  # fmt: skip
def eval_command(
    suite: str, data_dir: Path | None, languages: str | None, infilling: str,
    limit: int | None, url: str | None, key: str | None, models: tuple[str, ...],
    wires: str, passed_through: bool, cross_file: bool, other_holes: bool,
    tasks_file: Path | None, no_ceiling: bool, threads: int | None, json_path: Path | None,
    resume: bool,
) -> None:  # fmt: skip
    """Completion quality through a fimgate's API: HumanEval-FIM exact match (Qwen2.5-Coder
    scoring) and HumanEval single-line infilling (exact match, pass@1 in a sandbox), or
    (--suite editor) holes cut from real multi-file code as editors send them."""
    if resume and not json_path:
        raise click.UsageError("--resume needs --json (the run to resume)")
    if suite == "editor":
        if url:
            raise click.UsageError("--suite editor starts its own servers (no --url)")
        editor_eval(
            list(models) or [DEFAULT_MODEL, "qwen2.5-coder-0.5b"],
            _split(languages or "py,ts,js"), limit, _split(wires), passed_through, cross_file,
            threads, json_path, resume, ceilings=not no_ceiling, other_holes=other_holes,
            names=_names(tasks_file),
        )  # fmt: skip
        return
    if data_dir is None:
        raise click.UsageError("--suite humaneval needs --data (e.g. ../shared/data)")
    if len(models) > 1:
        raise click.UsageError("--suite humaneval runs one model at a time")
    model = models[0] if models else None
    chosen = _split(languages or "py,java,js")
    unknown = [lang for lang in chosen if lang not in humaneval_fim.LANGUAGES]
    if unknown:
        raise click.UsageError(f"unknown language(s) {unknown}; choose from py, java, js")
    if url and not key:
        raise click.UsageError("--url needs --key (or FIMGATE_API_KEY)")
    sets: dict[str, list[FimTask]] = {
        f"fim-{lang}": list(humaneval_fim.load(data_dir, lang, limit)) for lang in chosen
    }
    if infilling != "none":
        sets[infilling] = list(humaneval_infilling.load(data_dir, infilling, limit))
    if not sets:
        raise click.UsageError("nothing to run: no languages and --infilling none")
    console = Console(stderr=True)
    if url:
        console.print("[yellow]note:[/] the server's own prompt budget and time bound apply "
                      f"(the benchmark cuts the suffix to {humaneval_fim.SUFFIX_TOKENS} tokens "
                      "and has no time bound)")  # fmt: skip
        model = model or CODESTRAL_ALIASES[0]
        server = nullcontext(Endpoint(url, key or "", model))
    else:
        model = model or DEFAULT_MODEL
        server = started_server(model, threads, HUMANEVAL_SETTINGS)
    journal_path = json_path.with_suffix(".partial.jsonl") if json_path else None
    try:
        journal = Journal(journal_path, model, resume)
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    todo = {
        name: [t for t in tasks if (name, t.name) not in journal.made]
        for name, tasks in sets.items()
    }
    if any(todo.values()):
        with server as endpoint, Progress(console=console) as progress:
            for name, tasks in todo.items():
                bar = progress.add_task(
                    TITLES.get(name, name), total=len(sets[name]),
                    completed=len(sets[name]) - len(tasks),
                )  # fmt: skip

                def finished(
                    task: FimTask, done: Completion, name: str = name, bar: TaskID = bar
                ) -> None:
                    journal.add(name, task.name, done)
                    progress.advance(bar)

                run(endpoint, tasks, finished)
    results = {
        name: [_record(t, journal.made[name, t.name]) for t in tasks]
        for name, tasks in sets.items()
    }
    seconds = journal.seconds()
    summary = _summaries(results)
    Console().print(_table(model, summary))
    if json_path:
        json_path.write_text(json.dumps(
            {"model": model, "seconds": round(seconds, 1), "summary": summary, "records": results},
            indent=1,
        ))  # fmt: skip


def _names(path: Path | None) -> set[str] | None:
    if path is None:
        return None
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


TITLES = {
    **{f"fim-{k}": f"HumanEval-FIM {v}" for k, v in humaneval_fim.LANGUAGES.items()},
    "fim-all": "HumanEval-FIM, all (weighted)",
    "single-line": "Single-line infilling (Python)",
    "smoke": "Single-line infilling, 20 (Python)",
}


def _record(task: FimTask, done: Completion) -> dict[str, Any]:
    record: dict[str, Any] = {"name": task.name, "output": done.text, "tokens": done.tokens}
    if isinstance(task, humaneval_infilling.InfillTask):
        record["expected"] = task.expected
        record["exact"] = humaneval_infilling.exact(done.text, task)
        record["pass"] = run_program(humaneval_infilling.program(done.text, task)) == "passed"
    else:
        assert isinstance(task, humaneval_fim.Task)
        record["expected"] = task.expected
        record["exact"] = humaneval_fim.exact(done.text, task)
    return record


def _summary(rows: list[dict[str, Any]]) -> dict[str, float | int]:
    n = len(rows)
    hits = sum(bool(r["exact"]) for r in rows)
    summary: dict[str, float | int] = {"records": n, "exact": hits, "percent": 100 * hits / n}
    if "pass" in rows[0]:
        passed = sum(bool(r["pass"]) for r in rows)
        summary |= {"passed": passed, "pass_at_1": 100 * passed / n}
    summary["tokens_per_completion"] = sum(r["tokens"] for r in rows) / n
    return summary


def _summaries(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict]:
    """Per set, with the HumanEval-FIM languages together (weighted) after them."""
    fim = [name for name in results if name.startswith("fim-")]
    summary = {name: _summary(results[name]) for name in fim}
    if len(fim) > 1:
        summary["fim-all"] = _summary([r for name in fim for r in results[name]])
    return summary | {name: _summary(rows) for name, rows in results.items() if name not in fim}


def _table(model: str, summary: dict[str, dict]) -> Table:
    table = Table(title=f"Completion quality, {model}")
    for column in ("set", "records", "exact", "exact %", "pass@1 %", "tokens/completion"):
        table.add_column(column)
    for name, s in summary.items():
        pass_at_1 = f"{s['pass_at_1']:.1f}" if "pass_at_1" in s else "-"
        table.add_row(TITLES[name], str(s["records"]), str(s["exact"]), f"{s['percent']:.1f}",
                      pass_at_1, f"{s['tokens_per_completion']:.1f}")  # fmt: skip
    return table
