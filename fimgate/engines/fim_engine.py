"""The engine a served model answers with: a prompt builder, a completion shaper, and one
transport (in-process llama.cpp, a llama.cpp server, an OpenAI-compatible server, or a router
over several), sharing the server's memory of each editor (sessions.py); and chat answers
from the same transport (chat.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from fimgate.engines.base import ChatJob, EncodedPrompt, EngineError, EngineEvent, Job
from fimgate.engines.chat import ChatRunner
from fimgate.engines.prompt_builder import BuiltPrompt, PromptBuilder
from fimgate.engines.sessions import EditorSessions
from fimgate.engines.shaping import CompletionShaper
from fimgate.engines.transports.base import Transport
from fimgate.settings import EngineSettings


class FimEngine:
    def __init__(
        self, transport: Transport, settings: EngineSettings, sessions: EditorSessions
    ) -> None:
        if settings.max_predict_ms and not transport.capabilities.time_bound:
            raise EngineError(
                "FIMGATE_MAX_PREDICT_MS is set, but this engine's upstreams cannot bound "
                "generation in time (an OpenAI-compatible server): unset it"
            )
        self.transport = transport
        self.prompts = PromptBuilder(transport, settings, sessions)
        self.shaper = CompletionShaper(transport, settings, sessions)
        self.chat = ChatRunner(transport, settings.chat_slots)
        self.context_length = transport.context_length

    async def encode(self, job: Job) -> EncodedPrompt:
        if isinstance(job, ChatJob):
            return await self.chat.encode(job)
        prompt = await self.prompts.build(job)
        return EncodedPrompt(prompt.usage, prompt.max_new(job.max_tokens), prompt)

    def generate(self, prompt: EncodedPrompt, job: Job) -> AsyncIterator[EngineEvent]:
        if isinstance(job, ChatJob):
            return self.chat.generate(prompt, job)
        built: BuiltPrompt = prompt.payload  # type: ignore[assignment]
        return self.shaper.generate(built, job)

    def stats(self) -> dict[str, int]:
        return self.transport.stats() | self.shaper.stats() | self.prompts.counters.snapshot()

    def upstreams(self) -> list[dict[str, object]]:
        return self.transport.upstreams()

    async def aclose(self) -> None:
        await self.transport.aclose()


def embedded_engine(
    model_path: Path, settings: EngineSettings, sessions: EditorSessions | None = None
) -> FimEngine:
    """The default: the GGUF in this process (imports llama.cpp only when called)."""
    from fimgate.engines.transports.inprocess import InProcessLlamaCpp

    sessions = sessions or EditorSessions()
    return FimEngine(InProcessLlamaCpp(model_path, settings, sessions.typing), settings, sessions)
