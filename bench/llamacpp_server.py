"""llama.cpp's own HTTP server (its `llama-server` engine, through xllamacpp), as a peer.

    python bench/llamacpp_server.py MODEL.gguf PORT THREADS PARALLEL

Settings are llama.cpp's documented best for editor FIM traffic (llama.vim's README:
``--cache-reuse 256``, prompt caching, a slot per editor, a unified KV cache).
"""

from __future__ import annotations

import sys
import threading

import xllamacpp


def main() -> None:
    model = sys.argv[1]
    port, threads, parallel = (int(a) for a in sys.argv[2:5])
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.n_ctx = 8192
    params.n_parallel = parallel
    params.kv_unified = True
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.cache_prompt = True
    params.n_cache_reuse = 256
    params.endpoint_metrics = True
    params.port = port
    params.verbosity = -1
    server = xllamacpp.Server(params)
    print(f"listening {server.listening_address}", flush=True)
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main()
