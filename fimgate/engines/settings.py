"""The engine's settings, declared once: ``Settings`` (env ``FIMGATE_*`` and flags) inherits
them, the engine reads them, and the bench scripts build them the same way."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, Field


class EngineSettings(BaseModel):
    # -- how the in-process llama.cpp runs (an upstream server has its own) -----------------
    # Context per sequence. Prompt + completion must fit; 8k covers editor prompts while the
    # KV cache stays small (about 230 MB for the 1.5B model).
    n_ctx: int = Field(default=8192, ge=256)
    # Parallel sequences (llama.cpp slots) sharing one unified KV cache: continuous batching.
    n_parallel: int = Field(default=4, ge=1, le=64)
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # Prompt tokens per decode step. Smaller batches mean more points where a cancelled
    # request can stop during prompt processing (editors cancel constantly).
    n_batch: int = Field(default=256, ge=32)
    # Host RAM for the KV of prompts that left their slot: switching back to a file restores
    # it instead of recomputing (llama.cpp's --cache-ram).
    cache_ram_mib: int = Field(default=1024, ge=0)

    # -- building the prompt (engines/prompt_builder.py) -----------------------------------
    # FIM template family; None detects it from the model's vocabulary.
    fim_template: str | None = None
    # Prompt budget in tokens (0: none). The prefix keeps its end, the suffix its start. Every
    # keystroke recomputes the whole suffix (its KV depends on the prefix before it), so the
    # suffix cap is what a keystroke costs; see bench/RESULTS.md for how it was chosen.
    max_prefix_tokens: int = Field(default=1472, ge=0)
    max_suffix_tokens: int = Field(default=64, ge=0)
    # Put back the lines an editor's window dropped from the top since its last prompt, so the
    # prompt keeps the start the cache holds (engines/window_recall.py); needs a prefix cap.
    window_recall: bool = True
    # The text typed lately goes at the middle's start, so a keystroke does not read the
    # suffix again (engines/typed_middle.py).
    typed_middle: bool = True
    # Other files an editor writes into the prompt in one of Continue's formats are laid out
    # in the model's own repository format (engines/editor_context.py), within this many
    # tokens; a prompt in none of the formats is not touched.
    editor_context: bool = True
    max_context_tokens: int = Field(default=2048, ge=0)

    # -- shaping the completion (engines/shaping.py) ---------------------------------------
    # A deployment's time bound: stop generating once this long has passed since the first
    # token and a line is complete (llama.cpp's t_max_predict_ms); 0: none. Off by default:
    # a wall-clock rule makes the completion depend on how busy the machine is, and a cut
    # completion reports finish_reason "length".
    max_predict_ms: int = Field(default=0, ge=0)
    # End a completion where the middle ends: at a code fence or chat marker written out, or
    # where the suffix's next line is typed again (engines/middle_end.py).
    middle_end_stops: bool = True
    # A greedy request that types along an earlier suggestion of the same key gets its rest at
    # once, and generation goes on from its end (engines/suggestions.py).
    suggestions: bool = True

    # -- upstream servers (engines/router.py), when the model runs elsewhere ---------------
    # How often each upstream's /health is asked, and how long it has to answer 200 before
    # it is ejected (it comes back when it answers again).
    upstream_health_interval_s: float = Field(default=2.0, gt=0)
    upstream_health_timeout_s: float = Field(default=5.0, gt=0)
    # "affinity": the same editor and file go to the same upstream, where its prompt is
    # cached (bounded load); "round-robin": the least busy, in turn.
    routing: Literal["affinity", "round-robin"] = "affinity"
