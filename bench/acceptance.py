"""Inferred acceptance against the truth: a scripted typist writes real files (httpx's, from
the venv) through a real ``fimgate serve`` with the 0.5B, one completion request per pause,
and at each completion does one of three things, by a seeded draw:

- accepts it (Tab): the completion goes into the file;
- takes part of it (accept-next-word): its first word goes into the file;
- ignores it.

Then it types on, 1 to 24 characters of the real file (what a pause between requests holds),
and asks again. The server judges each completion by the next prompt
(``fimgate/gateway/acceptance.py``); this script knows what the typist did. It prints the
inferred rate and characters beside the truth, the confusion between them, and
``fimgate usage --acceptance`` from the server's own ledger.

    python bench/acceptance.py [--requests 150] [--seed 7] [--model qwen2.5-coder-0.5b]

An ignored completion that the typist's own text repeats (the model was right, the user typed
it instead of taking it) is counted by the server as accepted in part: its text does stand in
the prefix. The table shows how often that happens.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import httpx

from fimgate.local_process import free_port, stop, wait_until_up

BEFORE, AFTER = 1500, 500  # Continue's window around the cursor
FILES = ("_models.py", "_client.py", "_urls.py", "_config.py")
WORD = re.compile(r"\s*[A-Za-z_0-9]+|\s*\S")


def sources() -> list[str]:
    import httpx as package

    root = Path(package.__file__).parent
    return [(root / name).read_text() for name in FILES]


def start_server(model: str, folder: Path) -> tuple[subprocess.Popen, str, str, str]:
    port = free_port()
    fimgate = Path(sys.executable).parent / "fimgate"
    database = f"sqlite:///{folder / 'fimgate.db'}"
    command = [
        str(fimgate), "serve", "--model", model, "--port", str(port), "--data-dir", str(folder),
        "--database-url", database, "--bootstrap-key-file", str(folder / "key"),
    ]  # fmt: skip
    log = folder / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(process, f"{url}/health", log, 300)
    return process, url, (folder / "key").read_text().strip(), database


def first_word(text: str) -> str:
    match = WORD.match(text)
    return match.group(0) if match else ""


def run(url: str, key: str, requests: int, seed: int) -> list[dict]:
    """The typist's session; one entry per judged completion: what it did, what was shown."""
    rng = random.Random(seed)
    files = sources()
    done: list[dict] = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as c:
        for n in range(requests):
            source = files[n * len(files) // requests]
            if n == 0 or source is not files[(n - 1) * len(files) // requests]:
                pos = rng.randrange(len(source) // 4, len(source) // 2)  # a new file
                written = source[:pos]
            prompt, suffix = written[-BEFORE:], source[pos : pos + AFTER]
            body = {"model": "codestral-latest", "prompt": prompt, "suffix": suffix,
                    "max_tokens": 24, "temperature": 0}  # fmt: skip
            answer = c.post("/v1/fim/completions", json=body)
            answer.raise_for_status()
            shown = answer.json()["choices"][0]["message"]["content"]
            draw = rng.random()
            action = "accept" if draw < 0.3 else "part" if draw < 0.5 else "ignore"
            if not shown.strip():
                action = "empty"  # nothing was shown: the server does not judge it either
            taken = {"accept": shown, "part": first_word(shown)}.get(action, "")
            typed = rng.randint(1, 24)
            written += taken + source[pos : pos + typed]
            pos += typed
            done.append({"action": action, "shown": len(shown.rstrip()), "taken": len(taken)})
    return done[:-1]  # the last completion has no next request to judge it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fimgate-acceptance-"))
    process, url, key, database = start_server(args.model, folder)
    try:
        truth = run(url, key, args.requests, args.seed)
    finally:
        stop(process)
    fimgate = str(Path(sys.executable).parent / "fimgate")
    usage = [fimgate, "usage", "--json", "--database-url", database, "--data-dir", str(folder)]
    rows = json.loads(subprocess.run(usage, capture_output=True, text=True, check=True).stdout)
    judged = [r for r in rows if r["prev_shown_chars"] is not None]  # oldest first

    actions = Counter(t["action"] for t in truth)
    shown = [t for t in truth if t["action"] != "empty"]
    print(
        f"{args.requests} requests, {len(shown)} non-empty completions judged by the next "
        f"request ({dict(actions)}); the server judged {len(judged)}"
    )
    if len(judged) != len(shown):
        sys.exit("the server judged a different number of completions than were shown")
    confusion: Counter[tuple[str, str]] = Counter()
    for t, r in zip(shown, judged, strict=True):
        inferred = "ignore"
        if r["prev_accepted_chars"]:
            full = r["prev_accepted_chars"] >= r["prev_shown_chars"]
            inferred = "accept" if full else "part"
        confusion[t["action"], inferred] += 1
    true_rate = sum(t["action"] in ("accept", "part") for t in shown) / len(shown)
    inferred_rate = sum(bool(r["prev_accepted_chars"]) for r in judged) / len(judged)
    print(f"acceptance rate: inferred {inferred_rate:.1%}, true {true_rate:.1%}")
    inferred_chars = sum(r["prev_accepted_chars"] for r in judged)
    true_chars, shown_chars = sum(t["taken"] for t in shown), sum(t["shown"] for t in shown)
    print(f"characters accepted: inferred {inferred_chars}, true {true_chars} (of {shown_chars})")
    print("typist did -> server inferred: counts")
    for (did, inferred), count in sorted(confusion.items()):
        print(f"  {did:>6} -> {inferred:<6} {count}")
    table = [fimgate, "usage", "--acceptance", "--database-url", database]
    print(subprocess.run(table, capture_output=True, text=True, check=True).stdout)


if __name__ == "__main__":
    main()
