"""Side by side: the two llama.cpp bindings on the same GGUF, prompt, threads and settings.

    python bench/bindings.py MODEL.gguf [--llama-cpp-python PYTHON] [--json OUT]

Each binding runs in its own process (llama-cpp-python usually lives in another venv: pass
its interpreter). Measured the same way for both, by wall clock on a streaming completion:
cold time to first token on a ~1,000-token FIM prompt from a real source file (so prompt
tokens/s), decode tokens/s, and time to first token when the next request shares the prefix
(one character typed at the cursor, as an editor sends).
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
from pathlib import Path

# The workload: a real file, cut at a cursor, as an editor would send it.
SOURCE = Path(inspect.getfile(argparse)).read_text()
PREFIX = SOURCE[20000:23600]
SUFFIX = SOURCE[23600:24000]
N_PREDICT = 32
THREADS = 2

RUNNER = Path(__file__).with_name("binding_runner.py")


def run(python: str, kind: str, model: str) -> dict:
    args = json.dumps([model, kind, PREFIX, SUFFIX, N_PREDICT, THREADS])
    out = subprocess.run([python, str(RUNNER), args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--llama-cpp-python", help="interpreter that has llama_cpp installed")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    rows = [run(sys.executable, "xllamacpp", opts.model)]
    if opts.llama_cpp_python:
        rows.append(run(opts.llama_cpp_python, "llama-cpp-python", opts.model))
    cols = [
        "binding",
        "load_s",
        "prompt_tokens",
        "cold_ttft_s",
        "prompt_tok_s",
        "decode_tok_s",
        "typed_char_ttft_s",
    ]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    if opts.json:
        opts.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
