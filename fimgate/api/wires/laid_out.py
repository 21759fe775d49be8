"""A prompt a client has already laid out with a model's FIM markers, read back into prefix,
suffix and other files, so fimgate lays it out again with the markers as real special tokens
(as text they are only text to the tokenizer: see prompt_builder.py).

Zed's ``open_ai_compatible_api`` edit predictions send such prompts to ``/v1/completions``
(``prompt_format`` qwen and others), and so do Twinny and llama.vscode's OpenAI mode. The
formats (Zed's fim.rs has these): Qwen's and StarCoder's
``<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>`` (Qwen's repository format before it too),
CodeLlama's ``<PRE> P <SUF>S <MID>``, Codestral's ``[SUFFIX]S[PREFIX]P``, DeepSeek-Coder's
and GLM's. A prompt in none of them is text: the prefix.
"""

from __future__ import annotations

import re

from fimgate.engines.editor_context import EditorContext, recognize

_ANY = r"(?P<{}>.*)"
# Each format's markers around the prefix (p) and the suffix (s); the prompt ends where the
# model writes.
_FORMATS = tuple(
    (name, re.compile(re.escape(a) + _ANY.format(x) + re.escape(b) + _ANY.format(y)
                      + re.escape(c) + r"\Z", re.DOTALL))
    for name, a, x, b, y, c in (
        ("qwen", "<|fim_prefix|>", "p", "<|fim_suffix|>", "s", "<|fim_middle|>"),
        ("starcoder", "<fim_prefix>", "p", "<fim_suffix>", "s", "<fim_middle>"),
        ("codellama", "<PRE> ", "p", " <SUF>", "s", " <MID>"),
        ("codestral", "[SUFFIX]", "s", "[PREFIX]", "p", ""),
        # DeepSeek-Coder's markers are written with full-width bars (U+FF5C) and U+2581.
        ("deepseek", "<\uff5cfim\u2581begin\uff5c>", "p", "<\uff5cfim\u2581hole\uff5c>", "s",
         "<\uff5cfim\u2581end\uff5c>"),
        ("glm", "<|code_prefix|>", "p", "<|code_suffix|>", "s", "<|code_middle|>"),
    )
)  # fmt: skip


def read_laid_out(prompt: str, suffix: str) -> EditorContext | None:
    """The prefix, suffix and other files of a prompt laid out in a FIM format (with an empty
    ``suffix`` beside it: a client that lays out its prompt sends the suffix inside), or None
    when it is text."""
    if suffix:
        return None
    if prompt.startswith("<|repo_name|>"):  # Qwen's repository format, the FIM prompt last
        found = recognize(prompt, "")
        if found is not None:
            return found
    for name, pattern in _FORMATS:
        # Anchored at the first marker: text before it (a BOS written out) stays out.
        found = pattern.search(prompt)
        if found is not None and found.start() <= len("<|endoftext|>"):
            return EditorContext(name, "", (), "", found.group("p"), found.group("s"))
    return None
