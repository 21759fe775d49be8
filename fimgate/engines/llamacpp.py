"""The embedded engine: llama.cpp's own server engine, in-process, through xllamacpp.

Why this binding: it runs llama.cpp's server loop (slots, continuous batching, prompt cache)
in-process with the GIL released, installs as a prebuilt wheel in seconds, and decodes as
fast as llama-cpp-python's build here (see the README). Its Python surface is narrow:

- ``Server.handle_completions(request, callback)`` blocks until done, so it runs in a worker
  thread and streams through the callback; the callback returning True stops generation at
  the next token (or the next prompt batch, with ``return_progress``). Every request goes this
  way, streaming or not, so every request can be cancelled.
- There is no in-process tokenizer, but the engine's private HTTP listener (loopback, random
  port, a random key so nothing else on the machine can use it) has ``/tokenize`` with
  ``parse_special: false``: user text is tokenized as plain text and only the FIM markers
  become special tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import xllamacpp

from fimgate.engines.base import (
    EncodedPrompt,
    EngineError,
    EngineEvent,
    FimJob,
    Finished,
    FinishReason,
    PromptTooLong,
    TextDelta,
)
from fimgate.engines.editor_context import EditorContext, recognize
from fimgate.engines.fim_templates import FIM_TEMPLATES, PREFIX, SUFFIX, FimTemplate, get_template
from fimgate.engines.flights import SIBLING_WAIT_S, Flight, Flights, computed_over
from fimgate.engines.middle_end import MiddleEnd
from fimgate.engines.suggestions import Made, Suggestion, Suggestions, greedy
from fimgate.engines.typed_middle import (
    Healed,
    heal,
    past_typed,
    split_at,
    starts_with_grammar,
)
from fimgate.engines.window_recall import WindowRecall

_END = object()


@dataclass
class _Chunk:
    text: str
    predicted: int  # tokens generated so far in this call
    finish_reason: str | None


# Chars of an editor's prefix remembered per prefix token allowed: well past the cap (a
# token is 3-5 chars of code), so what is put back fills it, and the remembered start
# moves only every few thousand chars typed.
RECALL_CHARS_PER_TOKEN = 8

# The prefix cap drops whole blocks of this many tokens from the start, so the prompt's start
# (and with it the whole KV cache) stays put while the user types on.
PREFIX_CUT_BLOCK = 256


def cap_prefix(ids: list[int], cap: int) -> list[int]:
    """The end of the prefix within ``cap`` tokens, cut at a block boundary of the whole."""
    if not cap or len(ids) <= cap:
        return ids
    if cap <= PREFIX_CUT_BLOCK:
        return ids[-cap:]
    blocks = -(-(len(ids) - cap) // PREFIX_CUT_BLOCK)  # ceil: at most cap tokens are left
    return ids[blocks * PREFIX_CUT_BLOCK :]


@dataclass(frozen=True)
class _GoingOn:
    """A request that types along an earlier suggestion: its rest, and its text's tokens."""

    suggestion: Suggestion
    rest: str
    rest_tokens: int
    text_ids: list[int]


@dataclass(frozen=True)
class _Prompt:
    ids: list[int]
    heal: Healed | None  # the output must start with heal.text, which the client has
    # The current file's prefix and suffix, without the editor context read out of them.
    prefix: str
    suffix: str
    made: Made  # what a suggestion for this prompt is made for (suggestions.py)
    going_on: _GoingOn | None = None


@dataclass
class _Tally:
    spent: int = 0  # tokens llama.cpp generated, taken-back ones included
    reason: str | None = "length"  # llama.cpp's finish reason, or "stop" for an ending


@dataclass(frozen=True)
class LlamaCppOptions:
    n_ctx: int = 8192
    n_parallel: int = 4
    threads: int = 2
    n_batch: int = 256
    fim_template: str | None = None
    # Stop generating once this long has passed since the first token and a line is complete
    # (llama.cpp's t_max_predict_ms), so a slow machine still answers in time; 0: no bound.
    max_predict_ms: int = 0
    # Host RAM for KV states of prompts that left their slot (llama.cpp's --cache-ram): an
    # editor switching back to a file it had open restores its KV instead of recomputing.
    cache_ram_mib: int = 1024
    # Prompt budget in tokens: the prefix keeps its end, the suffix its start (0: no cap).
    max_prefix_tokens: int = 0
    max_suffix_tokens: int = 0
    # Put back the lines an editor's window dropped (window_recall.py); only with a prefix
    # cap, which bounds what is put back.
    window_recall: bool = False
    # End completions where the middle ends: chat artefacts, the suffix typed again
    # (middle_end.py).
    middle_end_stops: bool = False
    # The text typed lately at the middle's start, so a keystroke does not read the suffix
    # again (typed_middle.py).
    typed_middle: bool = False
    # Other files an editor wrote into the prompt in one of Continue's formats, laid out in
    # the model's own repository format (editor_context.py), within this many tokens.
    editor_context: bool = False
    max_context_tokens: int = 2048
    # Answer a request that types along an earlier greedy suggestion with its rest
    # (suggestions.py).
    suggestions: bool = False


class LlamaCppEngine:
    def __init__(self, model_path: Path, options: LlamaCppOptions) -> None:
        params = xllamacpp.CommonParams()
        params.model.path = str(model_path)
        params.n_ctx = options.n_ctx
        params.n_parallel = options.n_parallel
        # One KV pool shared by all slots: otherwise n_ctx is split per slot.
        params.kv_unified = True
        params.cpuparams.n_threads = options.threads
        params.cpuparams_batch.n_threads = options.threads
        params.n_batch = options.n_batch
        params.n_ubatch = options.n_batch
        params.cache_prompt = True
        params.cache_ram_mib = options.cache_ram_mib
        params.verbosity = -1
        self._key = secrets.token_urlsafe(32)
        params.api_keys = [self._key]
        self._server = xllamacpp.Server(params)
        address = self._server.listening_address
        if not address.startswith("http"):
            address = f"http://{address}"
        self._base_url = address
        self._tokenizer: httpx.AsyncClient | None = None
        self.context_length = options.n_ctx
        self._pool = ThreadPoolExecutor(options.n_parallel + 4, thread_name_prefix="llamacpp")
        self._options = options
        self._flights = Flights(options.n_parallel, options.n_batch)
        self._stats_lock = threading.Lock()
        self._stats = {
            "active": 0,
            "generated_tokens": 0,
            "requests": 0,
            "cancelled": 0,
            # Prompt tokens sent to llama.cpp vs actually computed (the rest came from the
            # KV cache): how well caching works (bench/ reports it).
            "prompt_tokens_sent": 0,
            "prompt_tokens_computed": 0,
            # Times a request reading a long prompt stepped out for a waiting one.
            "yields": 0,
            # Requests answered from a suggestion they typed along (suggestions.py).
            "went_on": 0,
        }
        self._suggestions = Suggestions()
        self.template, self._markers, self._bos = self._resolve_template(options.fim_template)
        self._recall = (
            WindowRecall(options.max_prefix_tokens * RECALL_CHARS_PER_TOKEN)
            if options.window_recall and options.max_prefix_tokens
            else None
        )

    # -- set-up ---------------------------------------------------------------------------

    def _resolve_template(self, name: str | None) -> tuple[FimTemplate, dict[str, int], int | None]:
        """Pick the FIM template (named, or the first whose markers the vocabulary has).

        Each marker must be exactly one token: a marker the tokenizer splits into pieces is
        not special to this model, and prompting with it would produce nonsense.
        """
        with httpx.Client(base_url=self._base_url, headers=self._auth(), timeout=30) as client:

            def single_token(marker: str) -> int | None:
                ids = client.post(
                    "/tokenize", json={"content": marker, "parse_special": True}
                ).json()["tokens"]
                return ids[0] if len(ids) == 1 else None

            candidates = [get_template(name)] if name else list(FIM_TEMPLATES.values())
            for template in candidates:
                found = {m: single_token(m) for m in template.markers}
                markers = {m: v for m, v in found.items() if v is not None}
                if len(markers) == len(found):
                    props = client.get("/props").json()
                    bos = single_token(props.get("bos_token") or "") if template.add_bos else None
                    # The repository format only where the vocabulary has both its markers.
                    repo = {m: single_token(m) for m in (template.repo_name, template.file_sep)}
                    if all(m and v is not None for m, v in repo.items()):
                        markers |= repo  # type: ignore[arg-type]
                    return template, markers, bos
        wanted = f"template {name!r}" if name else "any known FIM template"
        raise EngineError(f"this model's vocabulary lacks the special tokens of {wanted}")

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"}

    # -- encode ---------------------------------------------------------------------------

    async def _tokenize(self, text: str, pieces: bool = False) -> list[Any]:
        """Token ids (``pieces``: ``(id, piece)`` pairs) of user text, markers not parsed."""
        if not text:
            return []
        if self._tokenizer is None:
            self._tokenizer = httpx.AsyncClient(
                base_url=self._base_url, headers=self._auth(), timeout=60
            )
        body = {"content": text, "parse_special": False, "add_special": False}
        response = await self._tokenizer.post("/tokenize", json={**body, "with_pieces": pieces})
        if response.status_code != 200:
            raise EngineError(f"tokenizer failed: HTTP {response.status_code}")
        tokens = response.json()["tokens"]
        return [(t["id"], t["piece"]) for t in tokens] if pieces else tokens

    async def encode(self, job: FimJob) -> EncodedPrompt:
        context = self._editor_context(job)
        given, suffix = (context.prefix, context.suffix) if context else (job.prefix, job.suffix)
        prefix = self._recall.restore(job.editor, given) if self._recall else given
        split = split_at(prefix) if self._options.typed_middle else len(prefix)
        head = prefix[:split]
        texts = [self._tokenize(head), self._tokenize(prefix[split:], pieces=True)]
        texts += [self._tokenize(suffix), self._context_ids(context)]
        # Usage counts the client's prompt as sent, in the usual layout: the lines put back
        # are not the client's business. (The split falls at a line start, where the
        # tokenizer splits anyway, so head and typed tokens are the prefix's own.)
        if prefix != given:
            texts.append(self._tokenize(given))
        head_ids, typed, suffix_ids, context_ids, *sent = await asyncio.gather(*texts)
        typed_ids = [token for token, _ in typed]
        cap = self._options.max_prefix_tokens
        sent_ids = cap_prefix(sent[0] if sent else head_ids + typed_ids, cap)
        if self._options.max_suffix_tokens:
            suffix_ids = suffix_ids[: self._options.max_suffix_tokens]
        healed = heal(typed) if typed else None
        if cap and len(typed_ids) >= cap // 2:  # a budget too small to split
            head_ids, healed = cap_prefix(head_ids + typed_ids, cap), None
        elif cap:
            head_ids = cap_prefix(head_ids, cap - len(typed_ids))
        ids = self._layout(head_ids, suffix_ids, context_ids) + (healed.ids if healed else [])
        if len(ids) >= self.context_length and prefix != given:
            # What was put back must not fail it: the client's own prompt, as laid out.
            ids, healed = self._layout(sent_ids, suffix_ids, context_ids), None
        if len(ids) >= self.context_length:
            raise PromptTooLong(len(ids), self.context_length)
        usage = len(self._layout(sent_ids, suffix_ids, context_ids))
        made = Made.of(job, suffix, context_ids)
        going_on = await self._typed_along(job, made, prefix)
        return EncodedPrompt(usage, _Prompt(ids, healed, prefix, suffix, made, going_on))

    async def _typed_along(self, job: FimJob, made: Made, prefix: str) -> _GoingOn | None:
        """The earlier suggestion this request types along, if any (suggestions.py)."""
        if not self._options.suggestions or not greedy(job):
            return None
        found = self._suggestions.find(job.editor, made, prefix)
        if found is None:
            return None
        if not found.done.is_set():
            # The request before is still stopping (its client left at this keystroke):
            # it ends within a token.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SIBLING_WAIT_S):
                    await found.done.wait()
        rest = found.rest_after(prefix)
        if rest is None or not found.done.is_set():
            return None
        rest_ids, text_ids = await asyncio.gather(
            self._tokenize(rest), self._tokenize(found.lead + found.text)
        )
        if job.max_tokens is not None and len(rest_ids) > job.max_tokens:
            return None
        return _GoingOn(found, rest, len(rest_ids), text_ids)

    def _editor_context(self, job: FimJob) -> EditorContext | None:
        """Continue's editor context in the prompt, where this model has a repository
        format to lay it out in."""
        if not self._options.editor_context or self.template.file_sep not in self._markers:
            return None
        return recognize(job.prefix, job.suffix)

    async def _context_ids(self, context: EditorContext | None) -> list[int]:
        """The other files and the current path in the model's repository format
        (``<|repo_name|>repo\n<|file_sep|>path\ntext\n ... <|file_sep|>current\n``): the
        markers as special tokens, every byte of the editor's text tokenized as text. Files
        are dropped from the first (the least recent) to fit ``max_context_tokens``."""
        if context is None:
            return []
        texts = [f"{f.path}\n{f.text}\n" for f in context.files]
        texts += [f"{context.path}\n", f"{context.repo}\n" if context.repo else ""]
        *files, current, repo = await asyncio.gather(*map(self._tokenize, texts))
        sep = self._markers[self.template.file_sep]  # type: ignore[index]
        budget = self._options.max_context_tokens - len(current) - len(repo) - 2
        kept: list[int] = []
        for ids in reversed(files):
            if len(kept) + len(ids) + 1 > budget:
                break
            kept = [sep, *ids, *kept]
        head = [self._markers[self.template.repo_name], *repo] if repo else []  # type: ignore[index]
        return [*head, *kept, sep, *current]

    def _layout(
        self, prefix_ids: list[int], suffix_ids: list[int], context_ids: list[int]
    ) -> list[int]:
        ids: list[int] = [self._bos] if self._bos is not None else []
        ids += context_ids
        for piece in self.template.layout:
            if piece == PREFIX:
                ids += prefix_ids
            elif piece == SUFFIX:
                ids += suffix_ids
            else:
                ids.append(self._markers[piece])
        return ids

    # -- generate -------------------------------------------------------------------------

    async def generate(self, prompt: EncodedPrompt, job: FimJob) -> AsyncIterator[EngineEvent]:
        payload: _Prompt = prompt.payload  # type: ignore[assignment]
        if payload.going_on is not None:
            async for event in self._go_on(prompt, payload.going_on, job):
                yield event
            return
        ids = list(payload.ids)
        # The typed text's last tokens, taken back (typed_middle.py), are generated again
        # first: not sent (the client typed them), not charged.
        taken = payload.heal.taken if payload.heal else 0
        unsent = payload.heal.text if payload.heal else ""
        room = self.context_length - len(ids) - taken
        budget = room if job.max_tokens is None else min(job.max_tokens, room)
        tally = _Tally()
        head_text = ""
        if job.min_tokens and budget:
            # min_tokens: first generate that many with end-of-generation suppressed (stop
            # strings do not apply yet, as in vLLM), then continue normally from there.
            head = min(job.min_tokens, budget) + taken
            generated = ""
            run = self._run(ids, job, head, ignore_eos=True, grammar=starts_with_grammar(unsent))
            async with contextlib.aclosing(run):
                async for chunk in run:
                    generated += chunk.text
                    tally.spent = chunk.predicted
                    text, unsent = past_typed(chunk.text, unsent)
                    head_text += text
                    if text:
                        yield TextDelta(text, max(0, tally.spent - taken))
            ids += await self._tokenize(generated)
        n_predict = min(budget + taken - tally.spent, self.context_length - len(ids))
        if n_predict > 0:
            ending = self._ending(job, payload.prefix + head_text, payload.suffix)
            # With typed text in the middle, the model ends the middle right after it far
            # more often than it leaves a hole empty in the usual layout (a bare newline for
            # `900: 'cm',` between `1000: 'm',` and `500: 'd',`): so it must write something.
            wants_text = payload.heal is not None and not head_text.strip()
            grammar = starts_with_grammar(unsent, wants_text)
            record = None
            if greedy(job) and not head_text:  # a suggestion later keystrokes may type along
                record = Suggestion(payload.made, payload.prefix, ids, lead=unsent)
                self._suggestions.start(job.editor, record)
            steps = self._decode(ids, job, n_predict, ending, tally, unsent, grammar, record)
            async with contextlib.aclosing(steps):
                async for text in steps:
                    yield TextDelta(text, max(0, tally.spent - taken))
        produced = max(0, tally.spent - taken)
        reason = self._finish_reason(tally.reason, job, produced, room)
        yield Finished(reason, prompt.tokens, produced)

    async def _go_on(
        self, prompt: EncodedPrompt, going_on: _GoingOn, job: FimJob
    ) -> AsyncIterator[EngineEvent]:
        """The rest of a suggestion the user typed along (suggestions.py), at once; then,
        where the suggestion was cut short, generation from its end, every token of it and
        of its prompt still cached."""
        payload: _Prompt = prompt.payload  # type: ignore[assignment]
        suggestion = going_on.suggestion
        ids = [*suggestion.prompt_ids, *going_on.text_ids]
        room = self.context_length - len(suggestion.prompt_ids)
        budget = room if job.max_tokens is None else min(job.max_tokens, room)
        ending = self._ending(job, payload.prefix, payload.suffix)
        tally = _Tally(spent=going_on.rest_tokens, reason="stop" if suggestion.ended else "length")
        self._count(went_on=1)
        text, stopped = ending.feed(going_on.rest)
        if text:
            yield TextDelta(text, tally.spent)
        n_predict = min(budget - tally.spent, self.context_length - len(ids))
        if stopped:
            self._count(requests=1)  # answered without the model
            tally.reason = "stop"
        elif suggestion.ended or n_predict <= 0:
            self._count(requests=1)  # answered without the model
            if rest := ending.flush():
                yield TextDelta(rest, tally.spent)
        else:
            self._suggestions.start(job.editor, suggestion)
            steps = self._decode(ids, job, n_predict, ending, tally, "", "", suggestion)
            async with contextlib.aclosing(steps):
                async for text in steps:
                    yield TextDelta(text, tally.spent)
        reason = self._finish_reason(tally.reason, job, tally.spent, room)
        yield Finished(reason, prompt.tokens, tally.spent)

    def _ending(self, job: FimJob, prefix: str, suffix: str) -> MiddleEnd:
        return MiddleEnd(job.stop, prefix, suffix, detect=self._options.middle_end_stops)

    async def _decode(
        self,
        ids: list[int],
        job: FimJob,
        n_predict: int,
        ending: MiddleEnd,
        tally: _Tally,
        unsent: str,
        grammar: str,
        record: Suggestion | None,
    ) -> AsyncIterator[str]:
        """Generate after ``ids`` until the model, ``n_predict`` or ``ending`` ends it; yields
        the text to send (``unsent``: taken-back text the output starts with, not sent);
        ``tally`` keeps count. ``record`` grows with what the model writes."""
        base = tally.spent
        run = self._run(ids, job, n_predict, ignore_eos=False, grammar=grammar)
        if record is not None:
            record.done.clear()
        try:
            async with contextlib.aclosing(run):
                async for chunk in run:
                    tally.spent = base + chunk.predicted
                    piece, unsent = past_typed(chunk.text, unsent)
                    if record is not None:
                        record.text += piece
                        record.ended = chunk.finish_reason == "stop"
                    text, stopped = ending.feed(piece)
                    if text:
                        yield text
                    if stopped:
                        tally.reason = "stop"
                        return
                    if chunk.finish_reason:
                        tally.reason = chunk.finish_reason
            if rest := ending.flush():
                yield rest
        finally:
            if record is not None:
                record.done.set()

    @staticmethod
    def _finish_reason(
        llama_reason: str | None, job: FimJob, produced: int, room: int
    ) -> FinishReason:
        if llama_reason == "stop":
            return "stop"
        if produced >= room and (job.max_tokens is None or job.max_tokens > room):
            return "model_length"  # stopped by the context, not by max_tokens
        return "length"  # max_tokens, or the time bound

    async def _run(
        self, ids: list[int], job: FimJob, n_predict: int, *, ignore_eos: bool, grammar: str = ""
    ) -> AsyncIterator[_Chunk]:
        """One llama.cpp completion in a worker thread, its chunks bridged to the event loop.

        Closing this iterator (client gone, stop string reached) sets ``cancel``; the callback
        then answers True and llama.cpp stops at its next token or prompt batch.
        """
        request = {
            "prompt": ids,
            "n_predict": n_predict,
            "temperature": job.temperature,
            "top_p": job.top_p,
            # The API has no top_k/min_p: switch llama.cpp's defaults off so temperature
            # and top_p mean what the Mistral API says they mean.
            "top_k": 0,
            "min_p": 0.0,
            "frequency_penalty": job.frequency_penalty,
            "presence_penalty": job.presence_penalty,
            "seed": job.seed if job.seed is not None else xllamacpp.LLAMA_DEFAULT_SEED,
            "ignore_eos": ignore_eos,
            "stream": True,
            "cache_prompt": True,
            "return_progress": True,
            "timings_per_token": True,
            # The time bound must not cut the min_tokens pass short.
            "t_max_predict_ms": 0 if ignore_eos else self._options.max_predict_ms,
            "grammar": grammar,
        }
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        flight = Flight(ids)
        made_way_for: list[Flight] = []  # the requests it stepped out for, when it did
        # Per submission (stepping out makes another): [cache found, prompt tokens computed].
        reads: list[list[int]] = []

        def on_chunk(chunk: dict[str, Any]) -> bool:  # worker thread
            flight.started.set()
            read = reads[-1]
            if progress := chunk.get("prompt_progress"):
                if read[0] < 0:
                    read[0] = progress["cache"]
                read[1] = max(read[1], progress["processed"] - progress["cache"])
                if waiting := self._flights.waiting_behind(flight, progress):
                    made_way_for[:] = waiting
                    return True
            if timings := chunk.get("timings"):
                read[1] = max(read[1], timings.get("prompt_n", 0))
            if "prompt_progress" not in chunk or chunk.get("choices"):
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return flight.cancel.is_set()

        def work() -> None:  # worker thread
            self._count(active=1, requests=1)
            try:
                while True:
                    made_way_for.clear()
                    reads.append([-1, 0])
                    self._server.handle_completions(request, on_chunk)
                    if not made_way_for or flight.cancel.is_set():
                        break
                    self._count(yields=1)
                    # Back in the queue once they started: llama.cpp puts it back in the
                    # slot that holds what it read so far.
                    Flights.wait_started(made_way_for)
                    flight.started.clear()
            except Exception as exc:  # surfaced to the caller as an EngineError
                loop.call_soon_threadsafe(queue.put_nowait, {"error": {"message": str(exc)}})
            finally:
                self._count(
                    active=-1,
                    cancelled=int(flight.cancel.is_set()),
                    prompt_tokens_computed=computed_over(reads),
                )
                with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                    loop.call_soon_threadsafe(queue.put_nowait, _END)

        await self._flights.enter(flight)
        running = loop.run_in_executor(self._pool, work)
        running.add_done_callback(lambda _: self._flights.leave(flight))
        self._count(prompt_tokens_sent=len(ids))
        predicted = 0
        try:
            while (chunk := await queue.get()) is not _END:
                if "error" in chunk or "choices" not in chunk:
                    error = chunk.get("error", chunk)
                    raise EngineError(f"llama.cpp: {error.get('message', error)}")
                timings = chunk.get("timings") or {}
                now = timings.get("predicted_n", predicted)
                self._count(generated_tokens=now - predicted)
                predicted = now
                choice = chunk["choices"][0]
                yield _Chunk(choice.get("text") or "", predicted, choice.get("finish_reason"))
        finally:
            flight.cancel.set()

    def _count(self, **deltas: int) -> None:
        with self._stats_lock:
            for key, delta in deltas.items():
                self._stats[key] += delta

    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self._stats)

    async def aclose(self) -> None:
        if self._tokenizer is not None:
            await self._tokenizer.aclose()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._server = None  # type: ignore[assignment]  # frees the model and its threads
