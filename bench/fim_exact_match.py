"""HumanEval-FIM exact match straight through llama.cpp (no server), for several GGUFs side by
side: a quality check for a quantization or build choice before it may change the default.

    python bench/fim_exact_match.py GGUF [GGUF ...] [--language py] [--limit 100]
        [--in-order] [--typed-middle off|on|both] [--data ../shared/data] [--json OUT]

Scored as the Qwen2.5-Coder report does (see the data's README): the Qwen FIM prompt, built by
the engine's own prompt builder (fimgate/engines/prompt_builder.py), with the prefix cut to
its last 1,472 tokens (whole 256-token blocks from the start, as the engine cuts) and the
suffix to its first 512, greedy, at most 64 new tokens; the first line of the output (the
second when it starts with a newline), stripped, against the stripped canonical line.
Records are shuffled with a fixed seed (``--in-order``: the first N in file order, the records
``fimgate eval --limit N`` sends), and every model answers each record before the next one,
so a run cut short still compares like with like.
``--json`` writes every output; ``--compare EVAL.json`` (a ``fimgate eval --json`` run on the
same records) says on how many records the server's output and score are the direct run's.
``--typed-middle on`` lays the prompt out as fimgate's engine does by default (the text typed
lately at the middle's start, its last tokens healed: fimgate/engines/typed_middle.py);
``both`` runs each model both ways.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path
from typing import Any

from fimgate.engines.base import FimJob
from fimgate.engines.prompt_builder import PromptBuilder
from fimgate.engines.sessions import EditorSessions
from fimgate.engines.transports.base import Sampling
from fimgate.engines.transports.inprocess import InProcessLlamaCpp
from fimgate.engines.transports.llamacpp_api import llama_request
from fimgate.engines.typed_middle import starts_with_grammar
from fimgate.settings import EngineSettings
from fimgate_eval.humaneval_fim import MAX_TOKENS, PREFIX_TOKENS, SUFFIX_TOKENS, exact, load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class Model:
    """One GGUF, its prompts built by the engine's own prompt builder."""

    def __init__(
        self, path: Path, threads: int, typed_middle: bool = False, engine_layout: bool = False
    ) -> None:
        served = EngineSettings()  # engine_layout: slots and context as fimgate serve has them
        settings = EngineSettings(
            n_ctx=served.n_ctx if engine_layout else 4096,
            n_parallel=served.n_parallel if engine_layout else 1,
            threads=threads,
            n_batch=256,
            max_prefix_tokens=PREFIX_TOKENS,
            max_suffix_tokens=SUFFIX_TOKENS,
            typed_middle=typed_middle,
            window_recall=False,
            editor_context=False,
            suggestions=False,
        )
        self.name = path.name + (" typed-middle" if typed_middle else "")
        self.transport = InProcessLlamaCpp(path, settings)
        self.prompts = PromptBuilder(self.transport, settings, EditorSessions())
        self._loop = asyncio.new_event_loop()  # the prompt builder's tokenizing runs on it

    def request(self, prefix: str, suffix: str, n_probs: int = 0) -> tuple[dict[str, Any], str]:
        """The greedy llama.cpp request for one record, and the healed text it starts with."""
        job = FimJob(prefix, suffix, MAX_TOKENS)
        prompt = self._loop.run_until_complete(self.prompts.build(job))
        taken, healed = (prompt.heal.taken, prompt.heal.text) if prompt.heal else (0, "")
        grammar = starts_with_grammar(healed, prompt.heal is not None)
        body = llama_request(prompt.ids, Sampling(MAX_TOKENS + taken, grammar=grammar))
        body |= {"stream": False, "return_progress": False, "n_probs": n_probs}
        return body, healed

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """One request as llama.cpp takes it, blocking: its last chunk's choice (with
        ``n_probs``, its log-probabilities: fim_near_tie.py reads them)."""
        chunks: list[dict[str, Any]] = []

        def on_chunk(chunk: dict[str, Any]) -> bool:
            chunks.append(chunk)
            return False  # never stops it

        self.transport._server.handle_completions(body, on_chunk)
        return chunks[-1]["choices"][0]

    def infill(self, prefix: str, suffix: str) -> str:
        body, healed = self.request(prefix, suffix)
        return self.complete(body)["text"][len(healed) :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--language", default="py", choices=("py", "java", "js"))
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--in-order", action="store_true", help="the first N, not shuffled")
    parser.add_argument("--json", type=Path, help="write every output here")
    parser.add_argument(
        "--typed-middle",
        choices=("off", "on", "both"),
        default="off",
        help="the typed text at the middle's start, as the engine lays it out",
    )
    parser.add_argument("--compare", type=Path, help="a fimgate eval --json of the same records")
    args = parser.parse_args()
    records = load(args.data, args.language)
    if not args.in_order:
        random.Random(0).shuffle(records)
    records = records[: args.limit]
    layouts = {"off": [False], "on": [True], "both": [False, True]}[args.typed_middle]
    models = [Model(path, args.threads, typed) for path in args.models for typed in layouts]
    hits = [0] * len(models)
    outputs: dict[str, list[dict[str, Any]]] = {m.name: [] for m in models}
    for done, record in enumerate(records, 1):
        for i, model in enumerate(models):
            output = model.infill(record.prefix, record.suffix)
            hits[i] += exact(output, record)
            outputs[model.name].append(
                {"name": record.name, "output": output, "exact": exact(output, record)}
            )
        if done % 20 == 0 or done == len(records):
            scores = ", ".join(f"{m.name} {h}" for m, h in zip(models, hits, strict=True))
            print(f"{done}/{len(records)}: {scores}", flush=True)
    for model, hit in zip(models, hits, strict=True):
        print(f"{model.name}: {hit}/{len(records)} exact ({100 * hit / len(records):.1f}%)")
    if args.json:
        args.json.write_text(json.dumps(outputs, indent=1))
    if args.compare:
        compare(json.loads(args.compare.read_text()), f"fim-{args.language}", outputs)


def compare(served: dict[str, Any], key: str, direct: dict[str, list[dict[str, Any]]]) -> None:
    """Record by record: the server's output and score against each direct run's."""
    by_name = {r["name"]: r for r in served["records"][key]}
    for model, rows in direct.items():
        both = [(by_name[r["name"]], r) for r in rows if r["name"] in by_name]
        same_text = sum(s["output"] == d["output"] for s, d in both)
        same_score = sum(s["exact"] == d["exact"] for s, d in both)
        hits_direct = sum(d["exact"] for _, d in both)
        hits_served = sum(s["exact"] for s, _ in both)
        print(f"{model} vs the server ({served['model']}), {len(both)} records in both: "
              f"same output {same_text}, same score {same_score}; exact {hits_direct} direct, "
              f"{hits_served} served")  # fmt: skip


if __name__ == "__main__":
    main()
