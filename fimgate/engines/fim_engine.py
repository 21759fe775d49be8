"""The engine a served model answers with: a prompt builder, a completion shaper, and one
transport (in-process llama.cpp, a llama.cpp server, an OpenAI-compatible server, or a router
over several)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fimgate.engines.base import EncodedPrompt, EngineEvent, FimJob
from fimgate.engines.prompt_builder import BuiltPrompt, PromptBuilder
from fimgate.engines.router import Router
from fimgate.engines.settings import EngineSettings
from fimgate.engines.shaping import CompletionShaper, GoingOn
from fimgate.engines.transports.base import Transport


@dataclass(frozen=True)
class _Payload:
    prompt: BuiltPrompt
    going_on: GoingOn | None


class FimEngine:
    def __init__(self, transport: Transport, settings: EngineSettings) -> None:
        self.transport = transport
        self.prompts = PromptBuilder(transport, settings)
        self.shaper = CompletionShaper(transport, settings)
        self.context_length = transport.context_length

    async def encode(self, job: FimJob) -> EncodedPrompt:
        prompt = await self.prompts.build(job)
        going_on = await self.shaper.typed_along(job, prompt)
        return EncodedPrompt(prompt.usage, _Payload(prompt, going_on))

    def generate(self, prompt: EncodedPrompt, job: FimJob) -> AsyncIterator[EngineEvent]:
        payload: _Payload = prompt.payload  # type: ignore[assignment]
        return self.shaper.generate(payload.prompt, payload.going_on, job)

    def stats(self) -> dict[str, int]:
        return self.transport.stats() | self.shaper.stats()

    def upstreams(self) -> list[dict[str, object]]:
        """Each upstream's state, when this engine answers from upstream servers."""
        return self.transport.state() if isinstance(self.transport, Router) else []

    async def aclose(self) -> None:
        await self.transport.aclose()


def embedded_engine(model_path: Path, settings: EngineSettings) -> FimEngine:
    """The default: the GGUF in this process (imports llama.cpp only when called)."""
    from fimgate.engines.transports.inprocess import InProcessLlamaCpp

    return FimEngine(InProcessLlamaCpp(model_path, settings), settings)
