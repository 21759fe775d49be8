"""Shaping the completion: what is asked of the transport, and what of its output is sent.

min_tokens (a first pass with end-of-generation suppressed), the text typed lately that the
model writes again first and the client already has (typed_middle.py), stop strings and the
middle's end (middle_end.py), suggestions typed along (suggestions.py), and the finish reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from fimgate.engines.base import EngineEvent, FimJob, Finished, FinishReason, TextDelta
from fimgate.engines.counters import Counters
from fimgate.engines.flights import SIBLING_WAIT_S
from fimgate.engines.middle_end import MiddleEnd
from fimgate.engines.prompt_builder import BuiltPrompt
from fimgate.engines.settings import EngineSettings
from fimgate.engines.suggestions import Suggestion, Suggestions, greedy
from fimgate.engines.transports.base import Sampling, Transport
from fimgate.engines.typed_middle import past_typed, starts_with_grammar


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
    def __init__(self, transport: Transport, settings: EngineSettings) -> None:
        self._transport = transport
        self._settings = settings
        self._grammar = transport.capabilities.grammar
        self._suggestions = Suggestions()
        # Requests answered from a suggestion they typed along (suggestions.py).
        self._counters = Counters("went_on", "answered_without_model")

    def stats(self) -> dict[str, int]:
        return self._counters.snapshot()

    async def typed_along(self, job: FimJob, prompt: BuiltPrompt) -> GoingOn | None:
        """The earlier suggestion this request types along, if any (suggestions.py)."""
        if not self._settings.suggestions or not greedy(job):
            return None
        found = self._suggestions.find(job.editor, prompt.made, prompt.prefix)
        if found is None:
            return None
        if not found.done.is_set():
            # The request before is still stopping (its client left at this keystroke):
            # it ends within a token.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SIBLING_WAIT_S):
                    await found.done.wait()
        rest = found.rest_after(prompt.prefix)
        if rest is None or not found.done.is_set():
            return None
        tokenize = self._transport.tokenize
        rest_ids, text_ids = await asyncio.gather(tokenize(rest), tokenize(found.lead + found.text))
        if job.max_tokens is not None and len(rest_ids) > job.max_tokens:
            return None
        return GoingOn(found, rest, len(rest_ids), text_ids)

    async def generate(
        self, prompt: BuiltPrompt, going_on: GoingOn | None, job: FimJob
    ) -> AsyncIterator[EngineEvent]:
        if going_on is not None:
            async for event in self._go_on(prompt, going_on, job):
                yield event
            return
        ids = list(prompt.ids)
        context_length = self._transport.context_length
        # The typed text's last tokens, taken back (typed_middle.py), are generated again
        # first: not sent (the client typed them), not charged.
        taken = prompt.heal.taken if prompt.heal else 0
        unsent = prompt.heal.text if prompt.heal else ""
        room = context_length - len(ids) - taken
        budget = room if job.max_tokens is None else min(job.max_tokens, room)
        tally = _Tally()
        head_text = ""
        sampling = self._sampling(job, prompt.affinity)
        if job.min_tokens and budget:
            # min_tokens: first generate that many with end-of-generation suppressed (stop
            # strings do not apply yet, as in vLLM), then continue normally from there. The
            # time bound must not cut this pass short.
            head = replace(
                sampling,
                n_predict=min(job.min_tokens, budget) + taken,
                ignore_eos=True,
                max_predict_ms=0,
                grammar=self._grammar_for(unsent),
            )
            generated = ""
            run = self._transport.run(ids, head)
            async with contextlib.aclosing(run):
                async for chunk in run:
                    generated += chunk.text
                    tally.spent = chunk.predicted
                    text, unsent = past_typed(chunk.text, unsent)
                    head_text += text
                    if text:
                        yield TextDelta(text, max(0, tally.spent - taken))
            ids += await self._transport.tokenize(generated)
        n_predict = min(budget + taken - tally.spent, context_length - len(ids))
        if n_predict > 0:
            ending = self._ending(job, prompt.prefix + head_text, prompt.suffix)
            # With typed text in the middle, the model ends the middle right after it far
            # more often than it leaves a hole empty in the usual layout (a bare newline for
            # `900: 'cm',` between `1000: 'm',` and `500: 'd',`): so it must write something.
            wants_text = prompt.heal is not None and not head_text.strip()
            rest = replace(
                sampling, n_predict=n_predict, grammar=self._grammar_for(unsent, wants_text)
            )
            record = None
            if greedy(job) and not head_text:  # a suggestion later keystrokes may type along
                record = Suggestion(prompt.made, prompt.prefix, ids, lead=unsent)
                self._suggestions.start(job.editor, record)
            steps = self._decode(ids, rest, ending, tally, unsent, record)
            async with contextlib.aclosing(steps):
                async for text in steps:
                    yield TextDelta(text, max(0, tally.spent - taken))
        produced = max(0, tally.spent - taken)
        reason = self._finish_reason(tally.reason, job, produced, room)
        yield Finished(reason, prompt.usage, produced)

    async def _go_on(
        self, prompt: BuiltPrompt, going_on: GoingOn, job: FimJob
    ) -> AsyncIterator[EngineEvent]:
        """The rest of a suggestion the user typed along (suggestions.py), at once; then,
        where the suggestion was cut short, generation from its end, every token of it and
        of its prompt still cached."""
        context_length = self._transport.context_length
        suggestion = going_on.suggestion
        ids = [*suggestion.prompt_ids, *going_on.text_ids]
        room = context_length - len(suggestion.prompt_ids)
        budget = room if job.max_tokens is None else min(job.max_tokens, room)
        ending = self._ending(job, prompt.prefix, prompt.suffix)
        tally = _Tally(spent=going_on.rest_tokens, reason="stop" if suggestion.ended else "length")
        self._counters.add(went_on=1)
        text, stopped = ending.feed(going_on.rest)
        if text:
            yield TextDelta(text, tally.spent)
        n_predict = min(budget - tally.spent, context_length - len(ids))
        if stopped:
            self._counters.add(answered_without_model=1)
            tally.reason = "stop"
        elif suggestion.ended or n_predict <= 0:
            self._counters.add(answered_without_model=1)
            if rest := ending.flush():
                yield TextDelta(rest, tally.spent)
        else:
            self._suggestions.start(job.editor, suggestion)
            sampling = replace(self._sampling(job, prompt.affinity), n_predict=n_predict)
            steps = self._decode(ids, sampling, ending, tally, "", suggestion)
            async with contextlib.aclosing(steps):
                async for text in steps:
                    yield TextDelta(text, tally.spent)
        reason = self._finish_reason(tally.reason, job, tally.spent, room)
        yield Finished(reason, prompt.usage, tally.spent)

    def _sampling(self, job: FimJob, affinity: str) -> Sampling:
        return Sampling(
            n_predict=0,
            temperature=job.temperature,
            top_p=job.top_p,
            seed=job.seed,
            frequency_penalty=job.frequency_penalty,
            presence_penalty=job.presence_penalty,
            max_predict_ms=self._settings.max_predict_ms,
            affinity=affinity,
        )

    def _grammar_for(self, unsent: str, wants_text: bool = False) -> str:
        return starts_with_grammar(unsent, wants_text) if self._grammar else ""

    def _ending(self, job: FimJob, prefix: str, suffix: str) -> MiddleEnd:
        return MiddleEnd(job.stop, prefix, suffix, detect=self._settings.middle_end_stops)

    async def _decode(
        self,
        ids: list[int],
        sampling: Sampling,
        ending: MiddleEnd,
        tally: _Tally,
        unsent: str,
        record: Suggestion | None,
    ) -> AsyncIterator[str]:
        """Generate after ``ids`` until the model, ``n_predict`` or ``ending`` ends it; yields
        the text to send (``unsent``: taken-back text the output starts with, not sent);
        ``tally`` keeps count. ``record`` grows with what the model writes."""
        base = tally.spent
        run = self._transport.run(ids, sampling)
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
    def _finish_reason(reason: str | None, job: FimJob, produced: int, room: int) -> FinishReason:
        if reason == "stop":
            return "stop"
        if produced >= room and (job.max_tokens is None or job.max_tokens > room):
            return "model_length"  # stopped by the context, not by max_tokens
        return "length"  # max_tokens, or the time bound
