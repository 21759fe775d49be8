"""Shaping the completion: what is asked of the transport, and what of its output is sent.

min_tokens (a first pass with end-of-generation suppressed), the text typed lately that the
model writes again first and the client already has (typed_middle.py), stop strings and the
middle's end (middle_end.py), suggestions typed along (suggestions.py), and the finish reason.
Each generation takes its editor's turn on the file first (engines/sessions.py), so it runs
after a cancelled request before it has let go of the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from fimgate.engines import suggestions
from fimgate.engines.base import (
    EngineEvent,
    FimJob,
    Finished,
    FinishReason,
    TextDelta,
    max_new_tokens,
)
from fimgate.engines.context_memory import Scope
from fimgate.engines.counters import Counters
from fimgate.engines.middle_end import MiddleEnd
from fimgate.engines.prompt_builder import BuiltPrompt
from fimgate.engines.sessions import EditorSessions
from fimgate.engines.suggestions import Suggestion, greedy
from fimgate.engines.transports.base import Route, Sampling, Transport
from fimgate.engines.typed_middle import past_typed, starts_with_grammar
from fimgate.settings import EngineSettings


@dataclass(frozen=True)
class GoingOn:
    """A request that types along an earlier suggestion: its rest, and its text's tokens."""

    suggestion: Suggestion
    rest: str
    rest_tokens: int
    text_ids: list[int]


@dataclass
class _Tally:
    spent: int = 0  # tokens the transport generated, taken-back ones included
    reason: str | None = "length"  # the transport's finish reason, or "stop" for an ending


class CompletionShaper:
    def __init__(
        self, transport: Transport, settings: EngineSettings, sessions: EditorSessions
    ) -> None:
        self._transport = transport
        self._settings = settings
        self._sessions = sessions
        self._grammar = transport.capabilities.grammar
        # Requests answered from a suggestion they typed along (suggestions.py).
        self._counters = Counters("went_on", "answered_without_model")

    def stats(self) -> dict[str, int]:
        return self._counters.snapshot()

    async def generate(self, prompt: BuiltPrompt, job: FimJob) -> AsyncIterator[EngineEvent]:
        route = Route()
        if job.editor is not None:
            # Who is typing where: an upstream router keeps it where its prompt is cached.
            affinity = f"{job.editor.key_id}\n{job.editor.session}\n{prompt.place}"
            route = Route(affinity, await self._sessions.take_turn(job.editor, prompt.place))
        going_on = await self._typed_along(job, prompt)
        if going_on is not None:
            events = self._go_on(prompt, going_on, job, route)
        else:
            events = self._fresh(prompt, job, route)
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
        finally:
            if job.editor is not None:  # what the editor shows from now on is news to it
                self._sessions.context.answered(Scope.of(job.editor), prompt.place)

    async def _typed_along(self, job: FimJob, prompt: BuiltPrompt) -> GoingOn | None:
        """The earlier suggestion this request types along, if any (suggestions.py). Taken
        after the turn: a suggestion whose request was cancelled is whole by then."""
        if not self._settings.suggestions or not greedy(job) or job.editor is None:
            return None
        kept = self._sessions.memory(job.editor).suggestions
        found = suggestions.find(kept, prompt.made, prompt.prefix, self._sessions.horizon())
        rest = found.rest_after(prompt.prefix) if found else None
        if found is None or rest is None or found.running:
            return None
        tokenize = self._transport.tokenize
        rest_ids, text_ids = await asyncio.gather(tokenize(rest), tokenize(found.lead + found.text))
        if job.max_tokens is not None and len(rest_ids) > job.max_tokens:
            return None
        return GoingOn(found, rest, len(rest_ids), text_ids)

    def _remember(self, job: FimJob, suggestion: Suggestion) -> None:
        if job.editor is not None:
            suggestion.seen = self._sessions.clock()
            kept = self._sessions.memory(job.editor).suggestions
            suggestions.keep(kept, suggestion, self._sessions.horizon())

    # -- a completion from the prompt ------------------------------------------------------

    async def _fresh(
        self, prompt: BuiltPrompt, job: FimJob, route: Route
    ) -> AsyncIterator[EngineEvent]:
        ids = list(prompt.ids)
        # The typed text's last tokens, taken back (typed_middle.py), are generated again
        # first: not sent (the client typed them), not charged.
        taken = prompt.heal.taken if prompt.heal else 0
        unsent = prompt.heal.text if prompt.heal else ""
        budget = prompt.max_new(job.max_tokens)
        tally = _Tally()
        head_text = ""
        sampling = self._sampling(job)
        if job.max_tokens == 0:
            await self._warm(ids, sampling, route)
            yield Finished("length", prompt.usage, 0)
            return
        if job.min_tokens and budget:
            generated = ""  # as the model wrote it, taken-back text included
            head = self._head(ids, sampling, min(job.min_tokens, budget) + taken, unsent, route)
            async with contextlib.aclosing(head):
                async for chunk, spent in head:
                    generated += chunk
                    tally.spent = spent
                    text, unsent = past_typed(chunk, unsent)
                    head_text += text
                    if text:
                        yield TextDelta(text, max(0, spent - taken))
            ids += await self._transport.tokenize(generated)
        n_predict = min(budget + taken - tally.spent, self._transport.context_length - len(ids))
        if n_predict > 0:
            steps = self._rest(prompt, job, ids, replace(sampling, n_predict=n_predict), tally,
                               unsent, head_text, route)  # fmt: skip
            async with contextlib.aclosing(steps):
                async for text in steps:
                    yield TextDelta(text, max(0, tally.spent - taken))
        produced = max(0, tally.spent - taken)
        yield Finished(_finish_reason(tally.reason, job, produced, budget), prompt.usage, produced)

    async def _warm(self, ids: list[int], sampling: Sampling, route: Route) -> None:
        """Read the prompt into the engine's cache and write nothing (a request for no
        tokens: llama.vscode's warm-ups). llama.cpp writes one token even then: dropped."""
        run = self._transport.run(ids, replace(sampling, n_predict=1, grammar=""), route)
        async with contextlib.aclosing(run):
            async for _ in run:
                pass

    async def _head(
        self, ids: list[int], sampling: Sampling, n_predict: int, unsent: str, route: Route
    ) -> AsyncIterator[tuple[str, int]]:
        """min_tokens: first generate that many with end-of-generation suppressed (stop
        strings do not apply yet, as in vLLM), then go on normally from there. The time bound
        must not cut this pass short. Yields each chunk's text and the tokens spent."""
        head = replace(sampling, n_predict=n_predict, ignore_eos=True, max_predict_ms=0,
                       grammar=self._grammar_for(unsent))  # fmt: skip
        run = self._transport.run(ids, head, route)
        async with contextlib.aclosing(run):
            async for chunk in run:
                yield chunk.text, chunk.predicted

    def _rest(
        self, prompt: BuiltPrompt, job: FimJob, ids: list[int], sampling: Sampling,
        tally: _Tally, unsent: str, head_text: str, route: Route,
    ) -> AsyncIterator[str]:  # fmt: skip
        ending = self._ending(job, prompt.prefix + head_text, prompt.suffix)
        # With typed text in the middle, the model ends the middle right after it far more
        # often than it leaves a hole empty in the usual layout (a bare newline for
        # `900: 'cm',` between `1000: 'm',` and `500: 'd',`): so it must write something.
        wants_text = prompt.heal is not None and not head_text.strip()
        sampling = replace(sampling, grammar=self._grammar_for(unsent, wants_text))
        record = None
        if greedy(job) and not head_text:  # a suggestion later keystrokes may type along
            record = Suggestion(prompt.made, prompt.prefix, ids, lead=unsent)
            self._remember(job, record)
        return self._decode(ids, sampling, route, ending, tally, unsent, record)

    # -- the rest of a suggestion typed along ----------------------------------------------

    async def _go_on(
        self, prompt: BuiltPrompt, going_on: GoingOn, job: FimJob, route: Route
    ) -> AsyncIterator[EngineEvent]:
        """The rest of a suggestion the user typed along (suggestions.py), at once; then,
        where the suggestion was cut short, generation from its end, every token of it and
        of its prompt still cached."""
        suggestion = going_on.suggestion
        ids = [*suggestion.prompt_ids, *going_on.text_ids]
        budget = max_new_tokens(
            self._transport.context_length, len(suggestion.prompt_ids), job.max_tokens
        )
        ending = self._ending(job, prompt.prefix, prompt.suffix)
        tally = _Tally(spent=going_on.rest_tokens, reason="stop" if suggestion.ended else "length")
        self._counters.add(went_on=1)
        text, stopped = ending.feed(going_on.rest)
        if text:
            yield TextDelta(text, tally.spent)
        n_predict = min(budget - tally.spent, self._transport.context_length - len(ids))
        if stopped:
            self._counters.add(answered_without_model=1)
            tally.reason = "stop"
        elif suggestion.ended or n_predict <= 0:
            self._counters.add(answered_without_model=1)
            if rest := ending.flush():
                yield TextDelta(rest, tally.spent)
        else:
            self._remember(job, suggestion)
            sampling = replace(self._sampling(job), n_predict=n_predict)
            steps = self._decode(ids, sampling, route, ending, tally, "", suggestion)
            async with contextlib.aclosing(steps):
                async for text in steps:
                    yield TextDelta(text, tally.spent)
        reason = _finish_reason(tally.reason, job, tally.spent, budget)
        yield Finished(reason, prompt.usage, tally.spent)

    # -- one run of the transport ----------------------------------------------------------

    def _sampling(self, job: FimJob) -> Sampling:
        return Sampling(
            n_predict=0,
            temperature=job.temperature,
            top_p=job.top_p,
            top_k=job.top_k,
            seed=job.seed,
            frequency_penalty=job.frequency_penalty,
            presence_penalty=job.presence_penalty,
            max_predict_ms=self._time_bound(job),
        )

    def _time_bound(self, job: FimJob) -> int:
        """The tighter of the server's bound and the client's. A client's bound is a wish
        (llama.vscode sends one with every request): an engine that cannot bound time (an
        OpenAI-compatible upstream) serves it without, rather than fail it."""
        ours = self._settings.max_predict_ms
        if not job.max_predict_ms or not self._transport.capabilities.time_bound:
            return ours
        return min(ours, job.max_predict_ms) if ours else job.max_predict_ms

    def _grammar_for(self, unsent: str, wants_text: bool = False) -> str:
        return starts_with_grammar(unsent, wants_text) if self._grammar else ""

    def _ending(self, job: FimJob, prefix: str, suffix: str) -> MiddleEnd:
        detect = self._settings.middle_end_stops
        return MiddleEnd(job.stop, prefix, suffix, detect=detect, n_indent=job.n_indent)

    async def _decode(
        self, ids: list[int], sampling: Sampling, route: Route, ending: MiddleEnd,
        tally: _Tally, unsent: str, record: Suggestion | None,
    ) -> AsyncIterator[str]:  # fmt: skip
        """Generate after ``ids`` until the model, ``n_predict`` or ``ending`` ends it; yields
        the text to send (``unsent``: taken-back text the output starts with, not sent);
        ``tally`` keeps count. ``record`` grows with what the model writes."""
        base = tally.spent
        run = self._transport.run(ids, sampling, route)
        if record is not None:
            record.running = True
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
                record.running = False


def _finish_reason(reason: str | None, job: FimJob, produced: int, budget: int) -> FinishReason:
    if reason == "stop":
        return "stop"
    if produced >= budget and (job.max_tokens is None or job.max_tokens > budget):
        return "model_length"  # stopped by the context, not by max_tokens
    return "length"  # max_tokens, or the time bound
