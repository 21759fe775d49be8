"""Building the FIM prompt as token ids: the template, the layout, the caps, the typed
middle and its healing, the lines an editor's window dropped, the repository format, and
the chunks of other files the editor showed before (context_memory.py).

Only markers become special tokens; every byte of user text is tokenized as text, so a prompt
that contains ``<|fim_middle|>`` cannot steer the model. Everything model-specific comes from
the transport's tokenizer, and a layout step the transport cannot follow (healing needs a
grammar) is left out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cachetools import LRUCache

from fimgate.engines import window_recall
from fimgate.engines.base import EngineError, FimJob, PromptTooLong, max_new_tokens
from fimgate.engines.context_memory import Chunk, Scope
from fimgate.engines.counters import Counters
from fimgate.engines.editor_context import EditorContext, recognize
from fimgate.engines.fim_templates import FIM_TEMPLATES, PREFIX, SUFFIX, FimTemplate, get_template
from fimgate.engines.sessions import EditorSessions
from fimgate.engines.suggestions import Made
from fimgate.engines.transports.base import Transport
from fimgate.engines.typed_middle import Healed, heal, split_at
from fimgate.settings import EngineSettings

# Chars of an editor's prefix remembered per prefix token allowed: well past the cap (a
# token is 3-5 chars of code), so what is put back fills it, and the remembered start
# moves only every few thousand chars typed.
RECALL_CHARS_PER_TOKEN = 8

# The prefix cap drops whole blocks of this many tokens from the start, so the prompt's start
# (and with it the whole KV cache) stays put while the user types on.
PREFIX_CUT_BLOCK = 256

# Chars of code per token, for choosing memory's chunks before they are tokenized (the token
# budget is then kept exactly): Qwen's vocabulary reads code at ~3.5.
MEMORY_CHARS_PER_TOKEN = 3.5


def cap_prefix(ids: list[int], cap: int) -> list[int]:
    """The end of the prefix within ``cap`` tokens, cut at a block boundary of the whole."""
    if not cap or len(ids) <= cap:
        return ids
    if cap <= PREFIX_CUT_BLOCK:
        return ids[-cap:]
    blocks = -(-(len(ids) - cap) // PREFIX_CUT_BLOCK)  # ceil: at most cap tokens are left
    return ids[blocks * PREFIX_CUT_BLOCK :]


@dataclass(frozen=True)
class BuiltPrompt:
    ids: list[int]
    usage: int  # prompt tokens as the client sent them, in the usual layout
    heal: Healed | None  # the output must start with heal.text, which the client has
    # The current file's prefix and suffix, without the editor context read out of them.
    prefix: str
    suffix: str
    made: Made  # what a suggestion for this prompt is made for (suggestions.py)
    # The editor's file: the path Continue sent, else the prompt's first line (lines the
    # window dropped put back, so it stays put while the editor types). Its prompt's cache
    # lives in one place, and its requests take turns there.
    place: str
    context_length: int

    def max_new(self, max_tokens: int | None) -> int:
        """The completion's budget, for the prompt as run: typed tokens taken back are the
        client's prompt still."""
        taken = self.heal.taken if self.heal else 0
        return max_new_tokens(self.context_length, len(self.ids) + taken, max_tokens)


class PromptBuilder:
    def __init__(
        self, transport: Transport, settings: EngineSettings, sessions: EditorSessions
    ) -> None:
        self._transport = transport
        self._settings = settings
        self._sessions = sessions
        self.context_length = transport.context_length
        self.template, self.markers, self._bos = self._resolve_template(settings.fim_template)
        self._heals = transport.capabilities.grammar
        recall = settings.window_recall and settings.max_prefix_tokens
        self._recall_chars = settings.max_prefix_tokens * RECALL_CHARS_PER_TOKEN if recall else 0
        self._chunk_ids: LRUCache[int, list[int]] = LRUCache(4096)  # chunks are immutable
        self._file_block_ids: LRUCache[tuple[int, ...], list[int]] = LRUCache(1024)
        self.counters = Counters("memory_prompts", "memory_chunks", "memory_tokens")

    def _resolve_template(self, name: str | None) -> tuple[FimTemplate, dict[str, int], int | None]:
        """Pick the FIM template (named, or the first whose markers the vocabulary has).

        Each marker must be exactly one token: a marker the tokenizer splits into pieces is
        not special to this model, and prompting with it would produce nonsense.
        """
        single_token = self._transport.special_token
        candidates = [get_template(name)] if name else list(FIM_TEMPLATES.values())
        for template in candidates:
            found = {m: single_token(m) for m in template.markers}
            markers = {m: v for m, v in found.items() if v is not None}
            if len(markers) == len(found):
                bos_text = self._transport.bos_token() or ""
                bos = single_token(bos_text) if template.add_bos else None
                # The repository format only where the vocabulary has both its markers.
                repo = {m: single_token(m) for m in (template.repo_name, template.file_sep)}
                if all(m and v is not None for m, v in repo.items()):
                    markers |= repo  # type: ignore[arg-type]
                return template, markers, bos
        wanted = f"template {name!r}" if name else "any known FIM template"
        raise EngineError(f"this model's vocabulary lacks the special tokens of {wanted}")

    async def build(self, job: FimJob) -> BuiltPrompt:
        tokenize = self._transport.tokenize
        context = self._editor_context(job)
        given, suffix = (context.prefix, context.suffix) if context else (job.prefix, job.suffix)
        prefix = self._restore(job, given)
        place = (context.path if context else "") or prefix.split("\n", 1)[0]
        recalled = await self._recall(job, context, place, prefix + suffix)
        split = split_at(prefix) if self._settings.typed_middle else len(prefix)
        head = prefix[:split]
        texts = [tokenize(head), tokenize(prefix[split:], pieces=True)]
        texts += [tokenize(suffix), self._context_ids(context, recalled)]
        # Usage counts the client's prompt as sent, in the usual layout: the lines put back
        # are not the client's business. (The split falls at a line start, where the
        # tokenizer splits anyway, so head and typed tokens are the prefix's own.)
        if prefix != given:
            texts.append(tokenize(given))
        head_ids, typed, suffix_ids, (context_ids, sent_context), *sent = await asyncio.gather(
            *texts
        )
        typed_ids = [token for token, _ in typed]
        cap = self._settings.max_prefix_tokens
        sent_ids = cap_prefix(sent[0] if sent else head_ids + typed_ids, cap)
        if self._settings.max_suffix_tokens:
            suffix_ids = suffix_ids[: self._settings.max_suffix_tokens]
        # Taking typed tokens back needs a grammar to write them again; without one, the
        # typed text stays in the prompt as typed.
        healed = heal(typed) if typed and self._heals else None
        if healed is None:
            healed = Healed(typed_ids, "", 0) if typed else None
        if cap and len(typed_ids) >= cap // 2:  # a budget too small to split
            head_ids, healed = cap_prefix(head_ids + typed_ids, cap), None
        elif cap:
            head_ids = cap_prefix(head_ids, cap - len(typed_ids))
        ids = self._layout(head_ids, suffix_ids, context_ids) + (healed.ids if healed else [])
        if len(ids) >= self.context_length and context_ids != sent_context:
            # What memory added must not fail it.
            context_ids = sent_context
            ids = self._layout(head_ids, suffix_ids, context_ids) + (healed.ids if healed else [])
        if len(ids) >= self.context_length and prefix != given:
            # What was put back must not fail it: the client's own prompt, as laid out.
            ids, healed = self._layout(sent_ids, suffix_ids, context_ids), None
        if len(ids) >= self.context_length:
            raise PromptTooLong(len(ids), self.context_length)
        # Nor is what memory added (the client did not send it).
        usage = len(self._layout(sent_ids, suffix_ids, sent_context))
        made = Made.of(job, suffix, context_ids)
        return BuiltPrompt(ids, usage, healed, prefix, suffix, made, place, self.context_length)

    def _restore(self, job: FimJob, prefix: str) -> str:
        """``prefix`` with the lines its editor's window dropped put back (window_recall.py)."""
        if not self._recall_chars or job.editor is None:
            return prefix
        kept = self._sessions.memory(job.editor).prefixes
        now, since = self._sessions.clock(), self._sessions.horizon()
        return window_recall.restore(kept, prefix, now, since, self._recall_chars)

    def _editor_context(self, job: FimJob) -> EditorContext | None:
        """The other files the wire carried apart, else Continue's editor context in the
        prompt, where this model has a repository format to lay them out in."""
        if not self._settings.editor_context or self.template.file_sep not in self.markers:
            return None
        return job.context or recognize(job.prefix, job.suffix)

    async def _recall(
        self, job: FimJob, context: EditorContext | None, place: str, window: str
    ) -> list[list[int]]:
        """What the editor's memory gives this prompt (context_memory.py), as token ids of
        ``path\ntext\n`` per chunk (per file with ``memory_layout`` files), in a stable
        order; the window and the files the client sent are remembered first. Where the
        client sent other files, theirs stand alone unless the deployment asks for memory
        beside them (never their own text again)."""
        editor = job.editor
        memory = self._sessions.context
        if (
            not self._settings.editor_memory or editor is None or editor.memory == "off"
            or self.template.file_sep not in self.markers
        ):  # fmt: skip
            return []
        scope = Scope.of(editor)
        sent = context.files if context else ()
        for file in sent:
            memory.remember(scope, file.path, file.path, file.text)
        memory.remember(scope, place, context.path if context else "", window)
        budget = self._settings.memory_tokens
        if (sent and not self._settings.memory_beside_client_files) or not budget:
            return []
        chars = int(budget * MEMORY_CHARS_PER_TOKEN)
        chosen = memory.recall(scope, place, window, chars, [f.text for f in sent])
        blocks = await asyncio.gather(*map(self._tokens_of, chosen))
        kept: list[tuple[Chunk, list[int]]] = []
        used = 0
        for chunk, ids in zip(chosen, blocks, strict=True):  # best first
            if used + len(ids) + 1 <= budget:
                kept.append((chunk, ids))
                used += len(ids) + 1
        kept.sort(key=lambda k: k[0].id)
        out = [ids for _, ids in kept]
        if self._settings.memory_layout == "files":
            # One block per remembered file, its chunks in the order kept: fragments of one
            # file read as one file, not as many files without a name.
            files: dict[tuple[int, str, str], list[Chunk]] = {}
            for chunk, _ in kept:
                files.setdefault(chunk.owner, []).append(chunk)
            out = list(await asyncio.gather(*map(self._file_ids, files.values())))
        if out:
            tokens = sum(len(ids) + 1 for ids in out)
            self.counters.add(memory_prompts=1, memory_chunks=len(kept), memory_tokens=tokens)
        return out

    async def _file_ids(self, chunks: list[Chunk]) -> list[int]:
        """``path\ntext\n`` of one file's chunks joined: cached like a chunk's, since a
        file's prompt keeps its chunks across keystrokes (one chunk: that chunk's ids)."""
        if len(chunks) == 1:
            return await self._tokens_of(chunks[0])
        key = tuple(c.id for c in chunks)
        ids = self._file_block_ids.get(key)
        if ids is None:
            text = f"{chunks[0].path}\n" + "\n".join(c.text for c in chunks) + "\n"
            ids = self._file_block_ids[key] = await self._transport.tokenize(text)
        return ids

    async def _tokens_of(self, chunk: Chunk) -> list[int]:
        ids = self._chunk_ids.get(chunk.id)
        if ids is None:
            ids = self._chunk_ids[chunk.id] = await self._transport.tokenize(
                f"{chunk.path}\n{chunk.text}\n"
            )
        return ids

    async def _context_ids(
        self, context: EditorContext | None, recalled: list[list[int]]
    ) -> tuple[list[int], list[int]]:
        """The other files and the current path in the model's repository format
        (``<|repo_name|>repo\n<|file_sep|>path\ntext\n ... <|file_sep|>current\n``): the
        markers as special tokens, every byte of the editor's text tokenized as text. Files
        are dropped from the first (the least recent) to fit ``max_context_tokens``. Memory's
        chunks (``recalled``) come first; returned with them, and as the client sent it."""
        if context is None and not recalled:
            return [], []
        files_of = context.files if context else ()
        texts = [f"{f.path}\n{f.text}\n" for f in files_of]
        repo_name = context.repo if context else ""
        texts += [f"{context.path if context else ''}\n", f"{repo_name}\n" if repo_name else ""]
        *files, current, repo = await asyncio.gather(*map(self._transport.tokenize, texts))
        sep = self.markers[self.template.file_sep]  # type: ignore[index]
        budget = self._settings.max_context_tokens - len(current) - len(repo) - 2
        kept: list[int] = []
        for ids in reversed(files):
            if len(kept) + len(ids) + 1 > budget:
                break
            kept = [sep, *ids, *kept]
        head = [self.markers[self.template.repo_name], *repo] if repo else []  # type: ignore[index]
        remembered = [token for ids in recalled for token in (sep, *ids)]
        sent = [*head, *kept, sep, *current] if context else []
        return [*head, *remembered, *kept, sep, *current], sent

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
                ids.append(self.markers[piece])
        return ids
