"""Mistral's FIM wire (``POST /v1/fim/completions``): the request as the hosted gateway's
OpenAPI has it (api/schemas.py), the answer as a chat-completion-shaped object, or as SSE
chunks ending in ``data: [DONE]``."""

from __future__ import annotations

import time

from fimgate.api.request_body import parse_body
from fimgate.api.schemas import (
    AssistantMessage,
    ChatCompletionChoice,
    CompletionChunk,
    DeltaMessage,
    FimCompletionRequest,
    FimCompletionResponse,
    FinishReason,
    StreamChoice,
    UsageInfo,
)
from fimgate.api.streaming import SSE_DONE, sse_event
from fimgate.engines.base import Editor, FimJob, Finished

DONE = SSE_DONE


def parse(body: bytes) -> FimCompletionRequest:
    return parse_body(body, FimCompletionRequest)


def job(asked: FimCompletionRequest, editor: Editor, default_temperature: float) -> FimJob:
    """The engine's job for a request: the API's defaults filled in."""
    return FimJob(
        prefix=asked.prompt,
        suffix=asked.suffix or "",
        max_tokens=asked.token_limit,
        min_tokens=asked.min_tokens or 0,
        temperature=default_temperature if asked.temperature is None else asked.temperature,
        top_p=1.0 if asked.top_p is None else asked.top_p,
        # llama.cpp seeds are 32-bit and 0xFFFFFFFF means "random": fold larger seeds.
        seed=None if asked.random_seed is None else asked.random_seed % 0xFFFFFFFF,
        stop=asked.stop_list,
        frequency_penalty=asked.frequency_penalty or 0.0,
        presence_penalty=asked.presence_penalty or 0.0,
        editor=editor,
    )


def _usage(done: Finished) -> UsageInfo:
    return UsageInfo(
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        total_tokens=done.prompt_tokens + done.completion_tokens,
    )


def answer(request_id: str, model: str, text: str, done: Finished) -> dict[str, object]:
    """The whole answer. Its id is the ledger's request id, so the two can be matched."""
    return FimCompletionResponse(
        id=request_id,
        model=model,
        created=int(time.time()),
        usage=_usage(done),
        choices=[
            ChatCompletionChoice(
                message=AssistantMessage(content=text), finish_reason=done.finish_reason
            )
        ],
    ).model_dump()


class Chunks:
    """One streamed answer's SSE events: the role first, then text, then the end."""

    def __init__(self, request_id: str, model: str) -> None:
        self._id, self._model, self._created = request_id, model, int(time.time())

    def _event(
        self, content: str = "", finish: FinishReason | None = None,
        usage: UsageInfo | None = None, role: bool = False,
    ) -> bytes:  # fmt: skip
        delta = DeltaMessage(role="assistant" if role else None, content=content)
        choice = StreamChoice(delta=delta, finish_reason=finish)
        chunk = CompletionChunk(
            id=self._id, created=self._created, model=self._model, choices=[choice], usage=usage
        )
        return sse_event(chunk)

    def opening(self) -> bytes:
        return self._event(role=True)

    def text(self, text: str) -> bytes:
        return self._event(text)

    def finished(self, done: Finished) -> bytes:
        return self._event(finish=done.finish_reason, usage=_usage(done))

    def failed(self) -> bytes:
        """The engine failed after the headers went out: Mistral ends such a stream with an
        error finish."""
        return self._event(finish="error")
