"""FIM prompt layouts per model family, by name.

A layout is a sequence of marker strings (special tokens of the model's vocabulary) and the
two placeholders PREFIX and SUFFIX. Engines tokenize the user's text as plain text and only
the markers as special tokens, so a prompt containing "<|fim_middle|>" cannot steer the model.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "{prefix}"
SUFFIX = "{suffix}"


@dataclass(frozen=True)
class FimTemplate:
    name: str
    layout: tuple[str, ...]
    add_bos: bool = False  # prepend the vocabulary's BOS token (families trained with one)
    # The family's repository format, where it was trained on one: the markers before the
    # repository's name and before each file's path (other files, then the current one).
    repo_name: str | None = None
    file_sep: str | None = None

    @property
    def markers(self) -> tuple[str, ...]:
        return tuple(piece for piece in self.layout if piece not in (PREFIX, SUFFIX))


FIM_TEMPLATES: dict[str, FimTemplate] = {
    t.name: t
    for t in (
        FimTemplate(
            "qwen",
            ("<|fim_prefix|>", PREFIX, "<|fim_suffix|>", SUFFIX, "<|fim_middle|>"),
            repo_name="<|repo_name|>",
            file_sep="<|file_sep|>",
        ),
        FimTemplate(
            "starcoder",
            ("<fim_prefix>", PREFIX, "<fim_suffix>", SUFFIX, "<fim_middle>"),
            repo_name="<repo_name>",
            file_sep="<file_sep>",
        ),
        FimTemplate(
            "deepseek",
            ("<｜fim▁begin｜>", PREFIX, "<｜fim▁hole｜>", SUFFIX, "<｜fim▁end｜>"),  # noqa: RUF001
            True,
        ),
        # Codestral puts the suffix first and has no middle marker.
        FimTemplate("codestral", ("[SUFFIX]", SUFFIX, "[PREFIX]", PREFIX), True),
        FimTemplate("codellama", ("<PRE>", PREFIX, "<SUF>", SUFFIX, "<MID>"), True),
    )
}


def get_template(name: str) -> FimTemplate:
    try:
        return FIM_TEMPLATES[name]
    except KeyError:
        raise ValueError(
            f"unknown FIM template {name!r}; known: {', '.join(FIM_TEMPLATES)}"
        ) from None
