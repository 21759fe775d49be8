"""One binding's measurement, run in the interpreter that has it (driven by bindings.py)."""

import json
import queue
import sys
import threading
import time

MARKERS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
QWEN_END_TOKENS = (151643, 151645)


def timed(stream):
    """Time to first streamed piece, total time, and pieces (one per token)."""
    t0 = time.perf_counter()
    first = None
    n = 0
    for _ in stream:
        n += 1
        if first is None:
            first = time.perf_counter() - t0
    return first, time.perf_counter() - t0, n


def xllamacpp_binding(model, n_predict, threads):
    import httpx
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = model
    p.n_ctx = 4096
    p.n_parallel = 1
    p.kv_unified = True
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.n_batch = 256
    p.verbosity = -1
    p.api_keys = ["k"]
    srv = xllamacpp.Server(p)
    client = httpx.Client(base_url=srv.listening_address, headers={"Authorization": "Bearer k"})

    def tok(text, special):
        body = {"content": text, "parse_special": special}
        return client.post("/tokenize", json=body).json()["tokens"]

    def stream(ids):
        q = queue.Queue()
        req = {
            "prompt": ids,
            "n_predict": n_predict,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "cache_prompt": True,
        }

        def work():
            srv.handle_completions(req, lambda d: bool(q.put(d)))
            q.put(None)

        threading.Thread(target=work).start()
        while (d := q.get()) is not None:
            if d.get("choices") and d["choices"][0].get("text"):
                yield d

    return tok, stream


def llama_cpp_python_binding(model, n_predict, threads):
    from llama_cpp import Llama

    llm = Llama(
        model_path=model,
        n_ctx=4096,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=256,
        verbose=False,
    )

    def tok(text, special):
        return llm.tokenize(text.encode(), add_bos=False, special=special)

    def stream(ids):
        no_end = {t: -1e9 for t in QWEN_END_TOKENS}
        for d in llm.create_completion(
            ids, max_tokens=n_predict, temperature=0, stream=True, logit_bias=no_end
        ):
            if d["choices"][0]["text"]:
                yield d

    return tok, stream


def main():
    model, kind, prefix, suffix, n_predict, threads = json.loads(sys.argv[1])
    binding = xllamacpp_binding if kind == "xllamacpp" else llama_cpp_python_binding
    t = time.perf_counter()
    tok, stream = binding(model, n_predict, threads)
    load = time.perf_counter() - t
    m = [tok(x, True)[0] for x in MARKERS]

    def ids(pre):
        return [m[0], *tok(pre, False), m[1], *tok(suffix, False), m[2]]

    cold_ids = ids(prefix)
    first, total, n = timed(stream(cold_ids))
    typed_first, _, _ = timed(stream(ids(prefix + "x")))  # one character typed at the cursor
    print(
        json.dumps(
            {
                "binding": kind,
                "load_s": load,
                "prompt_tokens": len(cold_ids),
                "cold_ttft_s": first,
                "prompt_tok_s": len(cold_ids) / first,
                "decode_tok_s": (n - 1) / (total - first),
                "typed_char_ttft_s": typed_first,
            }
        )
    )


if __name__ == "__main__":
    main()
