"""What a keystroke costs the engine: time to read N new prompt tokens behind a cached prefix,
as llama.cpp itself reports it (its `prompt_ms` timing), for the N an editor's keystroke
brings (the typed text, plus the suffix read again behind it).

    python bench/keystroke_cost.py [MODEL] [--threads 2]

Same engine settings as `fimgate serve` (4 slots, unified KV, 256-token batches).
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

import httpx
import xllamacpp
from rich.console import Console
from rich.table import Table

from fimgate.modelpack import locate
from fimgate.settings import Settings

SOURCE = Path(inspect.getfile(argparse)).read_text()
CACHED = 700  # tokens of prefix already in the slot
NEW = (8, 16, 32, 67, 100, 130, 210)  # 67: fimgate's keystroke; ~210: a 200-token suffix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default="qwen2.5-coder-0.5b")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    settings = Settings()
    params = xllamacpp.CommonParams()
    engine = settings.engine
    params.model.path = str(locate(args.model, settings.store.data_dir))
    params.n_ctx, params.n_parallel, params.kv_unified = engine.n_ctx, engine.n_parallel, True
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = args.threads
    params.n_batch = params.n_ubatch = engine.n_batch
    params.cache_prompt, params.verbosity = True, -1
    server = xllamacpp.Server(params)
    url = server.listening_address
    url = url if url.startswith("http") else f"http://{url}"
    ids = httpx.post(f"{url}/tokenize", json={"content": SOURCE[:20000]}).json()["tokens"]

    def prompt_timings(prompt: list[int]) -> dict[str, Any]:
        timings: dict[str, Any] = {}

        def on_chunk(chunk: dict[str, Any]) -> bool:
            timings.update(chunk.get("timings") or {})
            return False

        body = {"prompt": prompt, "n_predict": 1, "temperature": 0, "stream": True,
                "cache_prompt": True, "timings_per_token": True}  # fmt: skip
        server.handle_completions(body, on_chunk)
        return timings

    table = Table(title=f"{Path(params.model.path).name}, {args.threads} threads")
    for column in ("new tokens", "read (ms)", "tokens/s", "again (ms)"):
        table.add_column(column)
    for n in NEW:
        runs = []
        for _ in range(2):
            prompt_timings(ids[:CACHED])  # the slot holds the prefix, as after a keystroke
            runs.append(prompt_timings(ids[:CACHED] + ids[2000 : 2000 + n]))
        first, again = runs
        table.add_row(
            str(first["prompt_n"]), f"{first['prompt_ms']:.0f}",
            f"{first['prompt_n'] / first['prompt_ms'] * 1000:.0f}", f"{again['prompt_ms']:.0f}",
        )  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
