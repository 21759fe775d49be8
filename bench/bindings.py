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

RUNNER = r'''
import json, sys, time
model, kind, prefix, suffix, n_predict, threads = json.loads(sys.argv[1])
MARKERS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")

def timed(stream):
    t0 = time.perf_counter(); first = None; n = 0
    for _ in stream:
        n += 1
        if first is None:
            first = time.perf_counter() - t0
    return first, time.perf_counter() - t0, n

if kind == "xllamacpp":
    import httpx, xllamacpp
    t = time.perf_counter()
    p = xllamacpp.CommonParams()
    p.model.path = model; p.n_ctx = 4096; p.n_parallel = 1; p.kv_unified = True
    p.cpuparams.n_threads = threads; p.cpuparams_batch.n_threads = threads
    p.n_batch = 256; p.verbosity = -1; p.api_keys = ["k"]
    srv = xllamacpp.Server(p)
    load = time.perf_counter() - t
    c = httpx.Client(base_url=srv.listening_address, headers={"Authorization": "Bearer k"})
    tok = lambda s, sp: c.post("/tokenize", json={"content": s, "parse_special": sp}).json()["tokens"]
    def stream(ids):
        import queue, threading
        q = queue.Queue()
        req = {"prompt": ids, "n_predict": n_predict, "temperature": 0, "ignore_eos": True,
               "stream": True, "cache_prompt": True}
        th = threading.Thread(target=lambda: (srv.handle_completions(req, lambda d: q.put(d) and False), q.put(None)))
        th.start()
        while (d := q.get()) is not None:
            if d.get("choices") and d["choices"][0].get("text"):
                yield d
else:
    from llama_cpp import Llama
    t = time.perf_counter()
    llm = Llama(model_path=model, n_ctx=4096, n_threads=threads, n_threads_batch=threads,
                n_batch=256, verbose=False)
    load = time.perf_counter() - t
    tok = lambda s, sp: llm.tokenize(s.encode(), add_bos=False, special=sp)
    def stream(ids):
        for d in llm.create_completion(ids, max_tokens=n_predict, temperature=0, stream=True,
                                       logit_bias={t: -1e9 for t in (151643, 151645)}):
            if d["choices"][0]["text"]:
                yield d

m = [tok(x, True)[0] for x in MARKERS]
def ids(pre):
    return [m[0]] + tok(pre, False) + [m[1]] + tok(suffix, False) + [m[2]]
cold_ids = ids(prefix)
first, total, n = timed(stream(cold_ids))
warm_first, _, _ = timed(stream(ids(prefix + "x")))
print(json.dumps({"binding": kind, "load_s": load, "prompt_tokens": len(cold_ids),
    "cold_ttft_s": first, "prompt_tok_s": len(cold_ids) / first,
    "decode_tok_s": (n - 1) / (total - first), "typed_char_ttft_s": warm_first}))
'''


def run(python: str, kind: str, model: str) -> dict:
    args = json.dumps([model, kind, PREFIX, SUFFIX, N_PREDICT, THREADS])
    out = subprocess.run([python, "-c", RUNNER, args], capture_output=True, text=True, check=True)
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
    cols = ["binding", "load_s", "prompt_tokens", "cold_ttft_s", "prompt_tok_s", "decode_tok_s",
            "typed_char_ttft_s"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    if opts.json:
        opts.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
