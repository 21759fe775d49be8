"""Does load change a temperature-0 completion? Each task once on an idle fimgate, then again
while three other clients keep it generating, same server, same default settings.

    python bench/load_independence.py [MODEL] [--tasks 40] [--hogs 3]

No wall-clock rule changes what a request gets (the time bound is off unless a deployment
sets one). What can still differ is llama.cpp's own arithmetic: a batch of four sequences
and a batch of one take different paths through the matrix kernels, and where two tokens are
nearly tied the last bits decide. This counts how often that happens on realistic tasks
(editor holes, bare), and prints the first differing tasks.
"""

from __future__ import annotations

import argparse
import threading

import httpx

from fimgate_eval import editor_holes
from fimgate_eval.runner import started_server

HOG = {
    "prompt": "def fibonacci(n):\n    ", "suffix": "\n", "max_tokens": 100_000,
    "min_tokens": 100_000, "temperature": 0, "stream": True,
}  # fmt: skip


def complete(client: httpx.Client, task: editor_holes.HoleTask) -> str:
    body = {"model": "codestral-latest", "prompt": task.prefix, "suffix": task.suffix,
            "max_tokens": 48, "temperature": 0}  # fmt: skip
    response = client.post("/v1/fim/completions", json=body)
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default="qwen2.5-coder-0.5b")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--hogs", type=int, default=3)
    args = parser.parse_args()
    tasks = editor_holes.quick(editor_holes.load(), args.tasks)
    with started_server(args.model, None) as endpoint:
        headers = {"Authorization": f"Bearer {endpoint.key}"}
        with httpx.Client(base_url=endpoint.url, headers=headers, timeout=600) as client:
            idle = [complete(client, t) for t in tasks]
            stop = threading.Event()

            def hog(i: int) -> None:
                body = {**HOG, "model": "codestral-latest", "prompt": f"# {i}\n{HOG['prompt']}"}
                with (
                    httpx.Client(base_url=endpoint.url, headers=headers, timeout=None) as c,
                    c.stream("POST", "/v1/fim/completions", json=body) as response,
                ):
                    for _ in response.iter_lines():
                        if stop.is_set():
                            return

            hogs = [threading.Thread(target=hog, args=(i,)) for i in range(args.hogs)]
            for t in hogs:
                t.start()
            try:
                busy = [complete(client, t) for t in tasks]
            finally:
                stop.set()
                for t in hogs:
                    t.join()
    first_line = sum(a.split("\n")[0] != b.split("\n")[0] for a, b in zip(idle, busy, strict=True))
    whole = sum(a != b for a, b in zip(idle, busy, strict=True))
    print(f"{args.model}: {len(tasks)} tasks, idle vs {args.hogs} generating beside: "
          f"first line differs on {first_line}, whole completion on {whole}")  # fmt: skip
    for task, a, b in zip(tasks, idle, busy, strict=True):
        if a != b:
            print(f"  {task.name}\n    idle: {a[:80]!r}\n    busy: {b[:80]!r}")


if __name__ == "__main__":
    main()
