"""The editor benchmark, side by side in one run: each task through a fimgate with its
default settings, in each wire format, and through llama.cpp straight fed the model's own
full prompt (the ceiling), one after the other so that a run cut short compares like with
like.

What is sent (``ways``):

- ``served:<wire>``: the task as Continue sends it in ``<wire>`` (continue_wire.py), through
  the HTTP API, streamed; the client closes the stream once it has the lines it scores, as
  Continue does once it has the first line.
- ``ceiling:bare`` (with the bare wire):
  ``<|fim_prefix|>prefix<|fim_suffix|>suffix<|fim_middle|>``, whole.
- ``ceiling:repo`` (tasks with snippets): the same in the model's repository format, the
  snippets as files: ``<|repo_name|>repo\\n<|file_sep|>path\\ntext\\n...<|file_sep|>path\\n``
  before it. The ceiling given the same context.
- ``passed:<wire>`` (``--passed-through``, cross-file tasks): llama.cpp fed Continue's text
  as it is, inside the bare FIM prompt: what a server that does not read the format gives.
- ``served:infill``, ``served:completions``: the bare task through llama.cpp's ``/infill``
  (as llama.vscode sends it) and OpenAI's ``/v1/completions`` with ``suffix``: the same job
  as ``served:bare``, so the same completions.
- ``served:session``: an editing session first (editor_session.py: the files of the
  definitions the task needs, and unrelated files of its package, each one completion
  request), then the task bare: what the server's memory of the editor adds.
  ``served:session-<wire>``: the same session, then the task in Continue's ``<wire>``
  (what memory adds beside the client's snippets, where the server is asked to).

Every task is sent under a key of its own (a developer of its own): the server remembers
what each key's editor showed it, and one task's windows must not reach another's prompt.

Scored as CrossCodeEval scores line completion: the output cut to as many lines as the
hole has; exact match of the first line (stripped), and edit similarity (rapidfuzz's
``fuzz.ratio``, 0-100) of the cut output against the hole, trailing spaces ignored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rapidfuzz import fuzz

from fimgate_eval.continue_wire import render
from fimgate_eval.direct import DirectLlama, Segment
from fimgate_eval.editor_holes import HoleTask
from fimgate_eval.editor_session import visits
from fimgate_eval.runner import Completion, Endpoint

MAX_TOKENS = {"single": 48, "multi": 160}
# The bare task through other editors' routes (a wire with no snippets of its own).
ROUTES = ("infill", "completions")
SESSION = "session"
BARE = ("bare", *ROUTES, SESSION)


def after_session(wire: str) -> str | None:
    """The wire a session wire sends the task in after its visits; None for the others."""
    if wire == SESSION:
        return "bare"
    return wire.removeprefix(f"{SESSION}-") if wire.startswith(f"{SESSION}-") else None


def position_of(task: HoleTask) -> str:
    """Where the hole starts: at a line's start (column 0), after its indentation, or
    inside it (the typed middle's layout is chosen by this: docs/engine.md)."""
    line = task.prefix.rsplit("\n", 1)[-1]
    if not line:
        return "line start"
    return "after indentation" if not line.strip() else "mid-line"


def lines_of(task: HoleTask) -> int:
    return task.expected.count("\n") + 1


def enough(task: HoleTask) -> Callable[[str], bool]:
    """Whether an output so far holds every line the task scores."""
    needed = lines_of(task)
    return lambda text: text.count("\n") >= needed


def cut(output: str, task: HoleTask) -> str:
    return "\n".join(output.split("\n")[: lines_of(task)])


def exact(output: str, task: HoleTask) -> bool:
    return output.split("\n")[0].strip() == task.expected.split("\n")[0].strip()


def edit_similarity(output: str, task: HoleTask) -> float:
    def norm(text: str) -> str:
        return "\n".join(line.rstrip() for line in text.split("\n"))

    return fuzz.ratio(norm(cut(output, task)), norm(task.expected))


# -- prompts for llama.cpp straight ----------------------------------------------------------

QWEN = {"prefix": "<|fim_prefix|>", "suffix": "<|fim_suffix|>", "middle": "<|fim_middle|>",
        "repo": "<|repo_name|>", "file": "<|file_sep|>"}  # fmt: skip


def fim_segments(prefix: str, suffix: str) -> list[Segment]:
    return [
        ("special", QWEN["prefix"]), ("text", prefix),
        ("special", QWEN["suffix"]), ("text", suffix), ("special", QWEN["middle"]),
    ]  # fmt: skip


def repo_segments(task: HoleTask) -> list[Segment]:
    """The model's repository format (Qwen2.5-Coder's report), the snippets as files."""
    segments: list[Segment] = [("special", QWEN["repo"]), ("text", f"{task.repo}\n")]
    for snippet in task.snippets:
        segments += [("special", QWEN["file"]), ("text", f"{snippet.path}\n{snippet.text}\n")]
    segments += [("special", QWEN["file"]), ("text", f"{task.path}\n")]
    return segments + fim_segments(task.prefix, task.suffix)


# -- running ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Way:
    side: str  # served, ceiling, passed
    wire: str  # bare, codestral, qwen, comments, repo

    @property
    def key(self) -> str:
        return f"{self.side}:{self.wire}"

    def applies(self, task: HoleTask) -> bool:
        # Continue's formats and the repository format differ from bare only with snippets;
        # the text passed through is the cross-file subset's third figure.
        if self.side == "passed":
            return task.cross_file
        return self.wire in BARE or bool(task.snippets)


def ways_for(wires: list[str], passed_through: bool, ceilings: bool = True) -> list[Way]:
    ways = [Way("served", wire) for wire in wires]
    if not ceilings:
        return ways
    # Each ceiling only where a wire is compared with it: on the 1.5B a way costs ~20 min
    # of the cross-file subset alone.
    if any(wire in BARE for wire in wires):
        ways.append(Way("ceiling", "bare"))
    if any(wire not in BARE for wire in wires):
        ways.append(Way("ceiling", "repo"))
    if passed_through:
        ways += [Way("passed", wire) for wire in wires if wire not in BARE]
    return ways


def served(client: httpx.Client, endpoint: Endpoint, task: HoleTask, wire: str) -> Completion:
    """One task through the API, as Continue sends it, under a key of its own; the stream is
    closed once the output holds the lines scored (the server then stops generating)."""
    client.headers["Authorization"] = f"Bearer {endpoint.fresh_key()}"
    sent = after_session(wire)
    if sent:
        visit_all(client, endpoint, task)
    path, body, text_of = _request(endpoint, task, sent or wire)
    done = enough(task)
    text = ""
    before = generated(client, endpoint)
    started = time.perf_counter()
    with client.stream("POST", f"{endpoint.url}{path}", json=body) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"{task.name}: HTTP {response.status_code}: {response.text[:300]}")
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            text += text_of(json.loads(line[6:]))
            if done(text):
                break
    seconds = time.perf_counter() - started
    return Completion(text, generated(client, endpoint) - before, seconds)


def visit_all(client: httpx.Client, endpoint: Endpoint, task: HoleTask) -> None:
    """The session before the hole: a completion request in each visited file, left once the
    server has taken it (a developer who moves on: it has seen the window, which is what it
    remembers), then the engine idle again before the next."""
    for visit in visits(task):
        body = {"model": endpoint.model, "prompt": visit.prefix, "suffix": visit.suffix,
                "max_tokens": MAX_TOKENS["single"], "temperature": 0, "stream": True}  # fmt: skip
        with client.stream("POST", f"{endpoint.url}/v1/fim/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                raise RuntimeError(f"{task.name}: visit: HTTP {response.status_code}")
        generated(client, endpoint)


def _request(
    endpoint: Endpoint, task: HoleTask, wire: str
) -> tuple[str, dict[str, Any], Callable[[dict[str, Any]], str]]:
    """The route, the body and how to read a streamed event's text, for ``wire``."""
    limit = MAX_TOKENS[task.kind]
    if wire == "infill":  # llama.vscode's fields for the hole (no ring of chunks)
        body = {"input_prefix": task.prefix, "input_suffix": task.suffix, "n_predict": limit,
                "temperature": 0, "stream": True, "cache_prompt": True, "id_slot": 0,
                "model": endpoint.model}  # fmt: skip
        return "/infill", body, lambda event: event.get("content") or ""
    if wire == "completions":
        body = {"model": endpoint.model, "prompt": task.prefix, "suffix": task.suffix,
                "max_tokens": limit, "temperature": 0, "stream": True}  # fmt: skip
        return "/v1/completions", body, lambda event: event["choices"][0]["text"] if event.get(
            "choices") else ""  # fmt: skip
    prompt, suffix = render(task, wire)
    body = {
        "model": endpoint.model, "prompt": prompt, "suffix": suffix,
        "max_tokens": limit, "temperature": 0, "stream": True,
    }  # fmt: skip
    return "/v1/fim/completions", body, lambda e: e["choices"][0]["delta"].get("content") or ""


def generated(client: httpx.Client, endpoint: Endpoint) -> int:
    """Tokens the server's engine generated so far, once it is idle (a stream closed early
    reports no usage; tasks run one at a time, so the difference is the task's)."""
    for _ in range(200):
        stats = next(iter(client.get(f"{endpoint.url}/health").json()["models"].values()))
        if not stats["active"]:
            break
        time.sleep(0.01)
    return stats["generated_tokens"]


def direct(llama: DirectLlama, task: HoleTask, way: Way) -> Completion:
    if way.wire == "repo":
        segments = repo_segments(task)
    elif way.side == "passed":
        segments = fim_segments(*render(task, way.wire))
    else:
        segments = fim_segments(task.prefix, task.suffix)
    made = llama.complete(llama.tokens(segments), MAX_TOKENS[task.kind], enough(task))
    return Completion(made.text, made.tokens, made.seconds)


def run(
    endpoint: Endpoint,
    llama: DirectLlama,
    tasks: list[HoleTask],
    ways: list[Way],
    made: dict[tuple[str, str], Completion],
    finished: Callable[[str, HoleTask, Completion], None],
) -> None:
    """Every way of every task not in ``made``, task by task."""
    with httpx.Client(timeout=600) as client:
        for task in tasks:
            for way in ways:
                if not way.applies(task) or (way.key, task.name) in made:
                    continue
                if way.side == "served":
                    done = served(client, endpoint, task, way.wire)
                else:
                    done = direct(llama, task, way)
                finished(way.key, task, done)


# -- results ---------------------------------------------------------------------------------


def records(
    tasks: list[HoleTask], ways: list[Way], made: dict[tuple[str, str], Completion]
) -> Iterator[dict[str, Any]]:
    for task in tasks:
        record: dict[str, Any] = {
            "name": task.name, "language": task.language, "kind": task.kind,
            "cross_file": task.cross_file, "snippets": len(task.snippets),
            "position": position_of(task), "expected": task.expected,
        }  # fmt: skip
        for way in ways:
            done = made.get((way.key, task.name))
            if done is not None:
                record[way.key] = {
                    "output": done.text, "exact": exact(done.text, task),
                    "es": round(edit_similarity(done.text, task), 1),
                    "tokens": done.tokens, "seconds": round(done.seconds or 0.0, 2),
                }  # fmt: skip
        yield record


def summary(rows: list[dict[str, Any]], key: str) -> dict[str, float | int] | None:
    scored = [r[key] for r in rows if key in r]
    if not scored:
        return None
    n = len(scored)
    return {
        "tasks": n,
        "exact": 100 * sum(s["exact"] for s in scored) / n,
        "es": sum(s["es"] for s in scored) / n,
        "tokens": sum(s["tokens"] for s in scored) / n,
        "seconds": sum(s["seconds"] for s in scored) / n,
    }


def paired(rows: list[dict[str, Any]], a: str, b: str) -> dict[str, float | int] | None:
    """``a`` against ``b`` on the tasks both have: exact and ES differences, and how many
    first lines one got right and the other not."""
    both = [r for r in rows if a in r and b in r]
    if not both:
        return None
    n = len(both)
    return {
        "tasks": n,
        "exact_a": 100 * sum(r[a]["exact"] for r in both) / n,
        "exact_b": 100 * sum(r[b]["exact"] for r in both) / n,
        "es_a": sum(r[a]["es"] for r in both) / n,
        "es_b": sum(r[b]["es"] for r in both) / n,
        "only_a": sum(r[a]["exact"] and not r[b]["exact"] for r in both),
        "only_b": sum(r[b]["exact"] and not r[a]["exact"] for r in both),
        "same_output": sum(cut_equal(r[a]["output"], r[b]["output"], r) for r in both),
    }


def cut_equal(x: str, y: str, record: dict[str, Any]) -> bool:
    n = record["expected"].count("\n") + 1
    return x.split("\n")[:n] == y.split("\n")[:n]


def save(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=1))
