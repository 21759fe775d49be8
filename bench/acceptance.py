"""Inferred acceptance against the truth: a scripted typist writes real files (httpx's, from
the venv) through a real ``fimgate serve`` with the 0.5B, one completion request per pause,
and at each completion does one of three things, by a seeded draw:

- accepts it (Tab): the completion goes into the file;
- takes part of it (accept-next-word): its first word goes into the file;
- ignores it.

Then it types on, 1 to 24 characters of the real file (what a pause between requests holds),
and asks again; every so often it moves to another file (the completion before a move is
judged by a prompt that cannot hold it, and is left out of the comparison). The server
judges each completion by the next prompt (``fimgate/gateway/acceptance.py``); this script
knows what the typist did. It prints the
inferred rate and characters beside the truth, the confusion between them, and
``fimgate usage --acceptance`` from the server's own ledger.

    python bench/acceptance.py [--requests 150] [--seed 7] [--model qwen2.5-coder-0.5b]

An ignored completion that the typist's own text repeats (the model was right, and the user
typed it instead of taking it) can count as accepted: its text does stand in the prefix. The
confusion table shows how often that happens.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import httpx
from local_server import start_fimgate

BEFORE, AFTER = 1500, 500  # Continue's window around the cursor
FILES = ("_models.py", "_client.py", "_urls.py", "_config.py")
WORD = re.compile(r"\s*[A-Za-z_0-9]+|\s*\S")


def sources() -> list[str]:
    import httpx as package

    root = Path(package.__file__).parent
    return [(root / name).read_text() for name in FILES]


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
                if done:  # judged by a prompt in another file: what was taken is not in it
                    done[-1]["moved"] = True
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
            done.append({"action": action, "shown": len(shown.rstrip()), "taken": len(taken),
                         "prompt": prompt, "text": shown})  # fmt: skip
    for entry, after in itertools.pairwise(done):
        entry["next_prompt"] = after["prompt"]
    return done[:-1]  # the last completion has no next request to judge it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--json", type=Path, help="write the session here (prompts, completions)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fimgate-acceptance-"))
    server = start_fimgate(folder, model=args.model)
    database = server.database_url
    try:
        truth = run(server.url, server.key, args.requests, args.seed)
    finally:
        server.stop()
    fimgate = str(Path(sys.executable).parent / "fimgate")
    usage = [fimgate, "usage", "--json", "--database-url", database, "--data-dir", str(folder)]
    rows = json.loads(subprocess.run(usage, capture_output=True, text=True, check=True).stdout)
    judged = [r for r in rows if r["prev_shown_chars"] is not None]  # oldest first
    if args.json:
        args.json.write_text(json.dumps({"truth": truth, "rows": rows}, indent=1))

    actions = Counter(t["action"] for t in truth)
    judged_truth = [t for t in truth if t["action"] != "empty"]
    # The server judges a completion by the next prompt; when that is in another file, a taken
    # completion is out of its sight (judged "not accepted"): left out of the comparison.
    moved = [i for i, t in enumerate(judged_truth) if t.get("moved")]
    shown = [t for i, t in enumerate(judged_truth) if i not in moved]
    print(
        f"{args.requests} requests, {len(shown)} non-empty completions judged by the next "
        f"request ({dict(actions)}); the server judged {len(judged)}"
    )
    if len(judged) != len(judged_truth):
        sys.exit("the server judged a different number of completions than were shown")
    judged = [r for i, r in enumerate(judged) if i not in moved]
    print(f"left out: {len(moved)} judged by a prompt in the next file")
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
