"""``fimgate eval`` as a pipeline (not a score): real records from the shared data, through a
real server's HTTP API, scored the way the Qwen2.5-Coder report scores HumanEval-FIM and the
original harness scores single-line infilling (its programs run in the sandbox)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from fimgate.engines.editor_context import recognize
from fimgate_eval import editor_holes, editor_suite, humaneval_infilling
from fimgate_eval.continue_wire import FORMATS, render
from fimgate_eval.editor_holes import HoleTask
from fimgate_eval.humaneval_fim import Task, answer_line, exact, load
from fimgate_eval.sandbox import run_program
from tests.conftest import DATA_DIR, FIMGATE, ROOT, Server

DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(
    not (DATA / "humaneval-fim-multilingual").is_dir(), reason=f"no evaluation data at {DATA}"
)


@pytest.mark.fast
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
        [FIMGATE, "eval", "--data", str(DATA), "--languages", "py,js", "--infilling", "smoke",
         "--limit", "3", "--url", server.url, "--json", str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "FIMGATE_API_KEY": server.key},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Completion quality" in done.stdout
    report = json.loads(out.read_text())
    sets = {
        "fim-py": (load(DATA, "py", 3), exact),
        "fim-js": (load(DATA, "js", 3), exact),
        "smoke": (humaneval_infilling.load(DATA, "smoke", 3), humaneval_infilling.exact),
    }
    for name, (tasks, scorer) in sets.items():
        records = report["records"][name]
        assert [r["name"] for r in records] == [t.name for t in tasks]
        for record, task in zip(records, tasks, strict=True):
            assert record["output"], record  # the model answered every task
            assert record["tokens"] > 0
            assert record["exact"] == scorer(record["output"], task)
        hits = sum(r["exact"] for r in records)
        summary = report["summary"][name]
        assert (summary["records"], summary["exact"]) == (3, hits)
        assert summary["tokens_per_completion"] == sum(r["tokens"] for r in records) / 3
    for record, task in zip(report["records"]["smoke"], sets["smoke"][0], strict=True):
        ran = run_program(humaneval_infilling.program(record["output"], task))
        assert record["pass"] == (ran == "passed"), record
    assert report["summary"]["fim-all"]["records"] == 6


@pytest.mark.fast
def test_sandbox_fails_a_bad_candidate_without_failing_the_run() -> None:
    assert run_program("assert sorted([2, 1]) == [1, 2]") == "passed"
    assert run_program("assert 1 == 2") == "failed"
    assert run_program("import os\nos._exit(3)") == "failed"
    assert run_program("while True:\n    pass", timeout=1) == "timeout"
    # A forked child is killed with it: the run does not wait for it.
    assert run_program("import os, time\nos.fork()\ntime.sleep(60)", timeout=1) == "timeout"
    assert run_program("x = bytearray(8 << 30)") == "failed"  # over the memory limit
    network = "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)"
    assert run_program(network) == "failed"
    assert run_program(network.replace("create_connection", "socket().connect")) == "failed"


@pytest.mark.fast
def test_infilling_program_is_the_original_harness_s() -> None:
    test = "def check(f):\n    assert f(1, 2) == 3"
    task = humaneval_infilling.InfillTask(
        "t", "def add(a, b):\n", "\n", "    return a + b\n", test, "add"
    )
    assert run_program(humaneval_infilling.program("    return a + b\n", task)) == "passed"
    assert run_program(humaneval_infilling.program("    return a - b\n", task)) == "failed"


@pytest.mark.fast
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


@needs_data
def test_a_stopped_eval_resumes_with_only_the_rest(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    command = [FIMGATE, "eval", "--data", str(DATA), "--languages", "py", "--infilling", "none",
               "--limit", "3", "--url", server.url, "--json", str(out)]  # fmt: skip
    env = {**os.environ, "FIMGATE_API_KEY": server.key}
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr
    journal = tmp_path / "eval.partial.jsonl"
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(entries) == 3 and {e["set"] for e in entries} == {"fim-py"}
    # A run stopped after two records, the second a marker no model writes, the third line
    # cut off mid-write.
    entries[1]["output"] = "MARKER"
    kept = "".join(json.dumps(e) + "\n" for e in entries[:2])
    journal.write_text(kept + json.dumps(entries[2])[:20])
    again = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, timeout=600, env=env
    )
    assert again.returncode == 0, again.stderr
    records = {r["name"]: r for r in json.loads(out.read_text())["records"]["fim-py"]}
    assert records[entries[1]["name"]]["output"] == "MARKER"  # kept, not asked again
    assert records[entries[2]["name"]]["output"], records  # made again
    lines = journal.read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == [e["name"] for e in entries]
    # Without --resume the journal starts over.
    fresh = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert fresh.returncode == 0, fresh.stderr
    assert "MARKER" not in journal.read_text()


@pytest.mark.fast
@needs_data
def test_a_journal_of_another_model_is_not_resumed(tmp_path: Path) -> None:
    (tmp_path / "eval.partial.jsonl").write_text(json.dumps(
        {"model": "other-model", "set": "fim-py", "name": "x", "output": "", "tokens": 0,
         "seconds": 1.0}
    ) + "\n")  # fmt: skip
    done = subprocess.run(
        [FIMGATE, "eval", "--data", str(DATA), "--url", "http://127.0.0.1:9", "--key", "k",
         "--json", str(tmp_path / "eval.json"), "--resume"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "other-model" in done.stderr
    no_json = subprocess.run(
        [FIMGATE, "eval", "--data", str(DATA), "--url", "http://127.0.0.1:9", "--key", "k",
         "--resume"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert no_json.returncode == 2 and "--json" in no_json.stderr


# -- the editor suite (holes cut from installed packages) ----------------------------------------


def _hole(expected: str, kind: str = "single") -> HoleTask:
    return HoleTask("t", "py", kind, "pkg", "pkg/a.py", "x = ", "\ny = 2\n", expected)


@pytest.mark.fast
def test_editor_scores_the_first_line_and_the_edit_similarity_of_the_hole_s_lines() -> None:
    one = _hole("foo(bar)")
    assert editor_suite.exact("foo(bar)  \nmore", one)
    assert not editor_suite.exact("\nfoo(bar)", one)  # an empty first line is what is shown
    assert editor_suite.edit_similarity("foo(bar)\nbaz()\n", one) == 100
    assert 50 < editor_suite.edit_similarity("foo(baz)", one) < 100
    two = _hole("if x:\n    y()", "multi")
    assert editor_suite.edit_similarity("if x:\n    y()\n    z()", two) == 100
    assert editor_suite.cut("a\nb\nc", two) == "a\nb"


@pytest.mark.fast
def test_editor_tasks_are_cut_the_same_way_every_time_and_hold_what_they_say() -> None:
    first, again = editor_holes.load(["js"]), editor_holes.load(["js"])
    assert [t.name for t in first] == [t.name for t in again] and first == again
    assert len({t.name for t in first}) == len(first) >= 40
    for task in first:
        source = (editor_holes.NODE_MODULES / task.repo / task.path).read_text()
        # The window is the file's own text around the hole, within Continue's sizes.
        assert task.prefix + task.expected + task.suffix in source
        assert len(task.prefix) <= editor_holes.PREFIX_CHARS + 200
        assert len(task.suffix) <= editor_holes.SUFFIX_CHARS + 1
        assert task.expected.strip()
        if task.cross_file:  # the last snippet defines a name the hole uses
            assert re.search(rf"\b{task.cross_name}\b", task.expected), task.name
            assert re.search(rf"\b{task.cross_name}\b", task.snippets[-1].text.split("\n")[0])
            assert not re.search(rf"\b{task.cross_name}\b", task.prefix.split("\n")[-1])


@pytest.mark.fast
def test_editor_tasks_file_names_a_part_of_the_suite_and_refuses_a_name_not_in_it(
    tmp_path: Path,
) -> None:
    names = tmp_path / "tasks.txt"
    known = editor_holes.load(["js"])[0].name
    names.write_text(f"{known}\njs:nowhere:x.js:1:single\n")
    done = subprocess.run(
        [FIMGATE, "eval", "--suite", "editor", "--languages", "js", "--tasks", str(names)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "js:nowhere:x.js:1:single" in done.stderr
    assert known not in done.stderr  # only the name it lacks is reported


@pytest.mark.fast
def test_each_wire_is_compared_with_its_own_ceiling_and_only_those_ceilings_are_made() -> None:
    def keys(wires: list[str], passed_through: bool) -> list[str]:
        return [way.key for way in editor_suite.ways_for(wires, passed_through)]

    assert keys(["bare"], False) == ["served:bare", "ceiling:bare"]
    assert keys(["qwen"], True) == ["served:qwen", "ceiling:repo", "passed:qwen"]
    assert keys(["bare", "codestral"], True) == [
        "served:bare", "served:codestral", "ceiling:bare", "ceiling:repo", "passed:codestral",
    ]  # fmt: skip


@pytest.mark.fast
@pytest.mark.parametrize("wire", FORMATS)
def test_every_wire_format_is_read_back_by_the_server_side(wire: str) -> None:
    for task in editor_holes.load(["js"]):
        prompt, suffix = render(task, wire)
        found = recognize(prompt, suffix)
        if wire == "bare" or (not task.snippets and wire != "comments"):
            assert found is None
        else:
            assert found is not None and (found.prefix, found.suffix) == (task.prefix, task.suffix)


def test_editor_suite_runs_side_by_side_through_the_api_and_llama_cpp(tmp_path: Path) -> None:
    out = tmp_path / "editor.json"
    done = subprocess.run(
        [FIMGATE, "eval", "--suite", "editor", "--model", "qwen2.5-coder-0.5b", "--languages",
         "js", "--limit", "3", "--wires", "bare,codestral", "--threads", "2",
         "--json", str(out)],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "FIMGATE_DATA_DIR": str(DATA_DIR)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "served default vs llama.cpp straight" in done.stdout
    report = json.loads(out.read_text())
    records = report["models"]["qwen2.5-coder-0.5b"]["records"]
    tasks = editor_holes.quick(editor_holes.load(["js"]), 3)
    assert [r["name"] for r in records] == [t.name for t in tasks]
    for record, task in zip(records, tasks, strict=True):
        for way in ("served:bare", "ceiling:bare"):
            scored = record[way]
            assert scored["tokens"] > 0 and scored["seconds"] > 0
            assert scored["exact"] == editor_suite.exact(scored["output"], task)
        assert ("served:codestral" in record) == bool(task.snippets)
    assert set(report["versions"]) == {t.repo for t in tasks}
