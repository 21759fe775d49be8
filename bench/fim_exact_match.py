"""HumanEval-FIM exact match straight through llama.cpp (no server), for several GGUFs side by
side: a quality check for a quantization or build choice before it may change the default.

    python bench/fim_exact_match.py GGUF [GGUF ...] [--language py] [--limit 100]
        [--data ../shared/data]

Scored as the Qwen2.5-Coder report does (see the data's README): the Qwen FIM prompt with the
prefix cut to its last 1,472 tokens and the suffix to its first 512, greedy, at most 64 new
tokens; the first line of the output (the second when it starts with a newline), stripped,
against the stripped canonical line. Records are shuffled with a fixed seed, and every model
answers each record before the next one, so a run cut short still compares like with like.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import httpx
import xllamacpp

from fimgate.evals.humaneval_fim import MAX_TOKENS, PREFIX_TOKENS, SUFFIX_TOKENS, exact, load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MARKERS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")


class Model:
    def __init__(self, path: Path, threads: int) -> None:
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx, params.n_parallel = 4096, 1
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads
        params.n_batch = params.n_ubatch = 256
        params.verbosity = -1
        self.name = path.name
        self.server = xllamacpp.Server(params)
        url = self.server.listening_address
        self.url = url if url.startswith("http") else f"http://{url}"
        self.markers = [self.tokenize(m, special=True)[0] for m in MARKERS]

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        if not text:
            return []
        body = {"content": text, "parse_special": special, "add_special": False}
        return httpx.post(f"{self.url}/tokenize", json=body, timeout=60).json()["tokens"]

    def infill(self, prefix: str, suffix: str) -> str:
        pre, suf, mid = self.markers
        prefix_ids = self.tokenize(prefix)[-PREFIX_TOKENS:]
        ids = [pre, *prefix_ids, suf, *self.tokenize(suffix)[:SUFFIX_TOKENS], mid]
        chunks: list[dict[str, Any]] = []

        def on_chunk(chunk: dict[str, Any]) -> bool:
            chunks.append(chunk)
            return False

        body = {"prompt": ids, "n_predict": MAX_TOKENS, "temperature": 0, "top_k": 0, "min_p": 0}
        self.server.handle_completions(body, on_chunk)
        return chunks[-1]["choices"][0]["text"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--language", default="py", choices=("py", "java", "js"))
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    records = load(args.data, args.language)
    random.Random(0).shuffle(records)
    records = records[: args.limit]
    models = [Model(path, args.threads) for path in args.models]
    hits = [0] * len(models)
    for done, record in enumerate(records, 1):
        for i, model in enumerate(models):
            hits[i] += exact(model.infill(record.prefix, record.suffix), record)
        if done % 20 == 0 or done == len(records):
            scores = ", ".join(f"{m.name} {h}" for m, h in zip(models, hits, strict=True))
            print(f"{done}/{len(records)}: {scores}", flush=True)
    for model, hit in zip(models, hits, strict=True):
        print(f"{model.name}: {hit}/{len(records)} exact ({100 * hit / len(records):.1f}%)")


if __name__ == "__main__":
    main()
