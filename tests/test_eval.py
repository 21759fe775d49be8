"""``fimgate eval`` as a pipeline (not a score): real records from the shared data, through a
real server's HTTP API, scored the way the Qwen2.5-Coder report scores HumanEval-FIM."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fimgate.evals.humaneval_fim import Task, answer_line, exact, load
from tests.conftest import FIMGATE, ROOT, Server

DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(
    not (DATA / "humaneval-fim-multilingual").is_dir(), reason=f"no evaluation data at {DATA}"
)


def test_the_scored_line_is_the_first_or_the_one_after_a_leading_newline() -> None:
    task = Task("t", "", "", "    return a + b")
    assert exact("    return a + b\nprint(add(1, 2))", task)
    assert exact("\n    return a + b  \n\n# Test", task)  # the hole's newline, then the line
    assert not exact("return a - b", task)
    assert answer_line("") == ""


@needs_data
def test_eval_scores_every_record_through_the_api(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    done = subprocess.run(
        [FIMGATE, "eval", "--data", str(DATA), "--languages", "py,js", "--limit", "3",
         "--url", server.url, "--json", str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "FIMGATE_API_KEY": server.key},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "HumanEval-FIM exact match" in done.stdout
    report = json.loads(out.read_text())
    for lang in ("py", "js"):
        tasks = load(DATA, lang, 3)
        records = report["records"][lang]
        assert [r["name"] for r in records] == [t.name for t in tasks]
        for record, task in zip(records, tasks, strict=True):
            assert record["output"], record  # the model answered every task
            assert record["exact"] == exact(record["output"], task)
        hits = sum(r["exact"] for r in records)
        assert report["summary"][lang] == {"records": 3, "exact": hits, "percent": 100 * hits / 3}


@needs_data
def test_eval_refuses_an_unknown_language_and_a_url_without_key() -> None:
    base = [FIMGATE, "eval", "--data", str(DATA)]
    env = {k: v for k, v in os.environ.items() if k != "FIMGATE_API_KEY"}
    wrong = subprocess.run([*base, "--languages", "py,cobol"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "cobol" in wrong.stderr
    keyless = subprocess.run(
        [*base, "--url", "http://127.0.0.1:9"], capture_output=True, text=True, env=env
    )
    assert keyless.returncode == 2 and "--key" in keyless.stderr
