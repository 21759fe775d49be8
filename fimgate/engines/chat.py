"""Chat answers (Continue's chat and edit roles), from the same transport as the model's
completions: llama.cpp's own chat handler in-process, or an upstream's
``/v1/chat/completions`` (llama.cpp, vLLM). The model's chat template, tools and response
formats are the engine's: it has the GGUF's template.

Keystrokes come first: a chat answer is hundreds of tokens, and on a machine of a few cores
every token of it is taken from the person typing beside it. A model answers at most
``chat_slots`` chats at once (more wait their turn, before the engine sees them), so its
other slots stay free for autocomplete; and a chat reading a long prompt steps out for
waiting requests between batches, as a long completion does (flights.py).

Admission needs the prompt's tokens before the engine runs: the messages' text is counted
with the model's tokenizer, plus the template's few tokens a message; the engine's own count
(its usage) is what the request is charged at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fimgate.engines.base import (
    ChatJob,
    EncodedPrompt,
    EngineError,
    EngineEvent,
    EngineRefused,
    Finished,
    FinishReason,
    PromptTooLong,
    TextDelta,
    max_new_tokens,
)
from fimgate.engines.transports.base import Route, Transport

# Template tokens a message costs beyond its text (Qwen's "<|im_start|>role\n...<|im_end|>\n"),
# and the answer's opening.
PER_MESSAGE = 5
OPENING = 3


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if not isinstance(content, str):  # parts: [{type: text, text}]
        content = "".join(part.get("text", "") for part in content)
    calls = message.get("tool_calls")
    return content + (json.dumps(calls) if calls else "")


class ChatRunner:
    def __init__(self, transport: Transport, chat_slots: int) -> None:
        self._transport = transport
        self._chat_slots = chat_slots
        self._slots = asyncio.Semaphore(max(1, chat_slots))

    async def encode(self, job: ChatJob) -> EncodedPrompt:
        if not self._chat_slots:
            raise EngineRefused("this server answers no chat (FIMGATE_CHAT_SLOTS is 0)")
        texts = [message_text(m) for m in job.messages]
        if tools := job.extra.get("tools"):
            texts.append(json.dumps(tools))
        counts = await asyncio.gather(*(self._transport.tokenize(t) for t in texts))
        tokens = sum(map(len, counts)) + PER_MESSAGE * len(job.messages) + OPENING
        context = self._transport.context_length
        if tokens >= context:
            raise PromptTooLong(tokens, context)
        max_new = max_new_tokens(context, tokens, job.max_tokens)
        return EncodedPrompt(tokens, max_new, _body(job))

    async def generate(self, prompt: EncodedPrompt, job: ChatJob) -> AsyncIterator[EngineEvent]:
        body: dict[str, Any] = prompt.payload  # type: ignore[assignment]
        produced, reason, usage = 0, None, None
        async with self._slots:  # keystrokes first: see the module's docstring
            events = self._transport.chat(body, Route())
            async with contextlib.aclosing(events):
                async for chunk in events:
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or ():
                        delta = dict(choice.get("delta") or {})
                        delta.pop("role", None)
                        text = delta.pop("content", None) or ""
                        fields = {k: v for k, v in delta.items() if v}
                        if text or fields:
                            produced = _predicted(chunk, produced + 1)
                            yield TextDelta(text, produced, fields or None)
                        reason = choice.get("finish_reason") or reason
        if reason is None:
            raise EngineError("the chat answer ended before its finish")
        prompt_tokens = usage["prompt_tokens"] if usage else prompt.tokens
        completion_tokens = usage["completion_tokens"] if usage else produced
        yield Finished(_finish(reason), prompt_tokens, completion_tokens)


def _predicted(chunk: dict[str, Any], counted: int) -> int:
    """Tokens written so far: llama.cpp says so in its timings; else one a chunk."""
    return int((chunk.get("timings") or {}).get("predicted_n") or counted)


def _finish(reason: str) -> FinishReason:
    if reason in ("stop", "tool_calls"):
        return reason  # type: ignore[return-value]
    return "length"


def _body(job: ChatJob) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": list(job.messages), "temperature": job.temperature,
        "top_p": job.top_p, "frequency_penalty": job.frequency_penalty,
        "presence_penalty": job.presence_penalty, "stream": True,
        "stream_options": {"include_usage": True}, **job.extra,
    }  # fmt: skip
    # Only a limit the client set: ``max_new`` counts on the estimate, which an engine that
    # checks prompt + max_tokens against its context (vLLM) would refuse when it is short.
    if job.max_tokens is not None:
        body["max_tokens"] = job.max_tokens
    if job.stop:
        body["stop"] = list(job.stop)
    if job.seed is not None:
        body["seed"] = job.seed
    return body
