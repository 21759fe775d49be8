"""Why one HumanEval-FIM record scores differently served and direct: the near ties in its
greedy output, straight through llama.cpp.

    python bench/fim_near_tie.py GGUF --language js --record NAME [--served EVAL.json]

The record is completed twice with the engine's layout (its slots sharing one KV pool, the
typed text at the middle's start): after the two records ``fimgate eval`` sends just before
it (sorted by prompt, so the prompt cache holds most of this one and reads only the rest, in
other batches), then cold, its whole prompt read again. Each run prints its output and every
token whose runner-up came within ``--margin`` nats; ``--served`` adds the output of a
``fimgate eval --json`` run. When a flip between the two runs reproduces the served output,
the difference is llama.cpp's arithmetic (logits are not bit-identical across batch
layouts), not the server.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fim_exact_match import DATA, Model

from fimgate_eval.humaneval_fim import Task, load
from fimgate_eval.runner import in_send_order


def near_ties(choice: dict[str, Any], margin: float) -> list[str]:
    """Each generated token whose runner-up is within ``margin`` nats of it."""
    lines = []
    for step, token in enumerate(choice["logprobs"]["content"]):
        top = token["top_logprobs"]
        if len(top) > 1 and top[0]["logprob"] - top[1]["logprob"] < margin:
            candidates = ", ".join(f"{t['token']!r} {t['logprob']:.3f}" for t in top[:3])
            lines.append(f"    token {step}: {candidates}")
    return lines


def show(model: Model, record: Task, label: str, margin: float, cached: bool) -> None:
    body, healed = model.request(record.prefix, record.suffix, n_probs=3)
    body["cache_prompt"] = cached
    choice = model.complete(body)
    print(f"{label}: {choice['text'][len(healed) :]!r}")
    print("\n".join(near_ties(choice, margin)) or "    no near tie")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--language", default="py", choices=("py", "java", "js"))
    parser.add_argument("--record", required=True, help="its name in the data")
    parser.add_argument("--served", type=Path, help="a fimgate eval --json holding the record")
    parser.add_argument("--margin", type=float, default=0.1, help="nats (default 0.1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    records = in_send_order(load(args.data, args.language))
    at = [r.name for r in records].index(args.record)
    if args.served:
        served = json.loads(args.served.read_text())["records"][f"fim-{args.language}"]
        output = next(r["output"] for r in served if r["name"] == args.record)
        print(f"served: {output!r}")
    model = Model(args.model, args.threads, typed_middle=True, engine_layout=True)
    for before in records[max(0, at - 2) : at]:
        model.complete(model.request(before.prefix, before.suffix)[0])
    show(model, records[at], "after the records sent before it", args.margin, cached=True)
    show(model, records[at], "cold", args.margin, cached=False)


if __name__ == "__main__":
    main()
