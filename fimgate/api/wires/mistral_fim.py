"""Mistral's FIM wire (``POST /v1/fim/completions``): the request as the hosted gateway's
OpenAPI has it (api/schemas.py), the answer as a chat-completion-shaped object, or as SSE
chunks ending in ``data: [DONE]``. Also Tabby's ``mistral/completion`` backend's wire."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

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
from fimgate.api.wires.base import Timing, Wire, seed_of, written
from fimgate.engines.base import Editor, FimJob, Finished, TextDelta


class MistralFimRequest(FimCompletionRequest):
    route: ClassVar[str] = "fim"

    @property
    def model_name(self) -> str:
        return self.model

    @property
    def streams(self) -> bool:
        return bool(self.stream)

    def job(self, editor: Editor, default_temperature: float) -> FimJob:
        """The engine's job for a request: the API's defaults filled in."""
        return FimJob(
            prefix=self.prompt,
            suffix=self.suffix or "",
            max_tokens=self.token_limit,
            min_tokens=self.min_tokens or 0,
            temperature=default_temperature if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=seed_of(self.random_seed),
            stop=self.stop_list,
            frequency_penalty=self.frequency_penalty or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            editor=editor,
        )

    def answer(
        self,
        request_id: str,
        model: str,
        deltas: Sequence[TextDelta],
        done: Finished,
        timing: Timing,
    ) -> dict[str, Any]:
        text = written(deltas)
        return answer(request_id, model, text, done)

    def chunks(self, request_id: str, model: str) -> Chunks:
        return Chunks(request_id, model)


def parse(body: bytes) -> MistralFimRequest:
    return parse_body(body, MistralFimRequest)


def _usage(done: Finished) -> UsageInfo:
    return UsageInfo(
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        total_tokens=done.prompt_tokens + done.completion_tokens,
    )


def answer(request_id: str, model: str, text: str, done: Finished) -> dict[str, Any]:
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

    def text(self, delta: TextDelta) -> bytes:
        text = delta.text
        return self._event(text)

    def finished(self, done: Finished, timing: Timing) -> bytes:
        return self._event(finish=done.finish_reason, usage=_usage(done))

    def failed(self) -> bytes:
        """The engine failed after the headers went out: Mistral ends such a stream with an
        error finish."""
        return self._event(finish="error")

    def closing(self) -> bytes:
        return SSE_DONE


WIRE = Wire("fim", parse)
