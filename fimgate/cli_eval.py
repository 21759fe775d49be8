"""``fimgate eval``: completion quality on public FIM benchmarks, through the HTTP API."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from fimgate.config import CODESTRAL_ALIASES
from fimgate.evals import humaneval_fim
from fimgate.evals.runner import Endpoint, run, started_server
from fimgate.modelpack import DEFAULT_MODEL


@click.command("eval")
@click.option(
    "--data", "data_dir", required=True, type=click.Path(exists=True, path_type=Path),
    help="The evaluation data folder (e.g. ../shared/data); read in place, never copied.",
)  # fmt: skip
@click.option(
    "--languages", default="py,java,js", show_default=True,
    help="HumanEval-FIM languages, comma-separated (py, java, js).",
)  # fmt: skip
@click.option("--limit", type=int, help="Only the first N records of each language.")
@click.option("--url", help="A running fimgate (e.g. http://127.0.0.1:8000); default: start one.")
@click.option("--key", envvar="FIMGATE_API_KEY", help="API key for --url (or FIMGATE_API_KEY).")
@click.option(
    "--model",
    help="The model to serve when starting one (default qwen2.5-coder-1.5b), or to ask --url "
    "for (default codestral-latest, its default model).",
)
@click.option("--threads", type=int, help="CPU threads of the server it starts.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write results here.")
def eval_command(
    data_dir: Path, languages: str, limit: int | None, url: str | None, key: str | None,
    model: str | None, threads: int | None, json_path: Path | None,
) -> None:  # fmt: skip
    """HumanEval-FIM exact match (Qwen2.5-Coder scoring) through a fimgate's API."""
    chosen = [lang.strip() for lang in languages.split(",") if lang.strip()]
    unknown = [lang for lang in chosen if lang not in humaneval_fim.LANGUAGES]
    if unknown or not chosen:
        raise click.UsageError(f"unknown language(s) {unknown}; choose from py, java, js")
    if url and not key:
        raise click.UsageError("--url needs --key (or FIMGATE_API_KEY)")
    tasks = {lang: humaneval_fim.load(data_dir, lang, limit) for lang in chosen}
    console = Console(stderr=True)
    if url:
        console.print("[yellow]note:[/] the server's own prompt budget applies (the benchmark "
                      f"cuts the suffix to {humaneval_fim.SUFFIX_TOKENS} tokens)")  # fmt: skip
        model = model or CODESTRAL_ALIASES[0]
        server = nullcontext(Endpoint(url, key or "", model))
    else:
        model = model or DEFAULT_MODEL
        server = started_server(model, threads)
    results: dict[str, list[dict[str, object]]] = {}
    started = time.monotonic()
    with server as endpoint, Progress(console=console) as progress:
        for lang, lang_tasks in tasks.items():
            bar = progress.add_task(f"HumanEval-FIM {lang}", total=len(lang_tasks))
            outputs = run(endpoint, lang_tasks, lambda bar=bar: progress.advance(bar))
            results[lang] = [
                {"name": t.name, "expected": t.expected, "output": out,
                 "exact": humaneval_fim.exact(out, t)}
                for t, out in zip(lang_tasks, outputs, strict=True)
            ]  # fmt: skip
    seconds = time.monotonic() - started
    table = Table(title=f"HumanEval-FIM exact match, {model}")
    for column in ("language", "records", "exact", "%"):
        table.add_column(column)
    summary = {}
    for lang, rows in results.items():
        hits = sum(bool(r["exact"]) for r in rows)
        summary[lang] = {"records": len(rows), "exact": hits, "percent": 100 * hits / len(rows)}
        table.add_row(humaneval_fim.LANGUAGES[lang], str(len(rows)), str(hits),
                      f"{100 * hits / len(rows):.1f}")  # fmt: skip
    total = sum(len(rows) for rows in results.values())
    hits = sum(s["exact"] for s in summary.values())
    table.add_row("all (weighted)", str(total), str(hits), f"{100 * hits / total:.1f}")
    Console().print(table)
    if json_path:
        json_path.write_text(json.dumps(
            {"model": model, "seconds": round(seconds, 1), "summary": summary, "records": results},
            indent=1,
        ))  # fmt: skip
