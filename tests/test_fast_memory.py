"""What the gateway remembers of each editor's files (engines/context_memory.py), through the
real app (the fast tier): a prompt gets the related chunk of another file its key showed;
never another workspace's, never another key's unless the workspace shares; nothing once a
key is revoked or memory is off; bounded in size; stable across keystrokes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fimgate.api.app import forget_revoked
from fimgate.cli import main
from fimgate.engines.context_memory import (
    BYTES_PER_KEY,
    FILES_PER_KEY,
    ContextMemory,
    Scope,
)
from tests.engine_double import decode
from tests.fast_app import FastApp, fast_app

pytestmark = [pytest.mark.fast, pytest.mark.anyio]

# The file a developer looked at (the definition), and one it then types in that uses it.
PRICING = (
    "import math\n\n\ndef compute_total(prices, tax_rate):\n"
    "    subtotal = math.fsum(prices)\n    return round(subtotal * (1 + tax_rate), 2)\n"
)
CHECKOUT = (
    "from shop.pricing import compute_total\n\n\ndef checkout(cart, tax_rate):\n"
    "    prices = [item.price for item in cart]\n    total = "
)
# A definition whose signature the first 12-line chunk cuts: its parameters are in the next.
SIGNATURE_CUT = "\n".join(
    [f"RATE_{n} = {n}" for n in range(10)]
    + ["def compute_total(", "    prices,", "    tax_rate,"]
    + ["    discount_code=None,", "    currency='EUR',", "):", "    subtotal = sum(prices)"]
    + ["    return round(subtotal * (1 + tax_rate), 2)", ""]
)
UNRELATED = "class Colour:\n    red = 1\n    green = 2\n    blue = 3\n    magenta = 4\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def fast(tmp_path: Path) -> AsyncIterator[FastApp]:
    async with fast_app(tmp_path, n_ctx=4096) as app:
        yield app


async def _complete(fast: FastApp, prompt: str, key: str | None = None) -> str:
    """The prompt the engine ran for one FIM request (its text, markers included)."""
    response = await fast.post({"model": "codestral-latest", "prompt": prompt, "suffix": "\n",
                                "max_tokens": 4}, key)  # fmt: skip
    assert response.status_code == 200, response.text
    return decode(fast.transport.prompts[-1])


def _memory(fast: FastApp) -> ContextMemory:
    return fast.registry.sessions.context


async def test_a_prompt_gets_the_related_chunk_of_a_file_its_editor_showed(fast: FastApp) -> None:
    await _complete(fast, PRICING)
    await _complete(fast, UNRELATED)
    prompt = await _complete(fast, CHECKOUT)
    # The definition, as a file of the repository format, before the file being edited.
    assert "<|file_sep|>\nimport math\n\n\ndef compute_total(prices, tax_rate):" in prompt
    assert prompt.index("def compute_total") < prompt.index("<|fim_prefix|>")
    assert "class Colour" not in prompt  # not related enough
    # Not charged: the usage is the client's prompt alone, as laid out without memory.
    row = fast.rows()[-1]
    assert row.prompt_tokens == 3 + len(CHECKOUT + "\n")  # three markers, then one per char
    metrics = (await fast.client.get("/metrics")).text
    assert 'fimgate:memory_prompts_total{model="test-model"} 1.0' in metrics
    assert 'fimgate:memory_chunks_total{model="test-model"} 1.0' in metrics


async def test_only_chunks_that_define_something_are_given(fast: FastApp) -> None:
    """A call site shares the window's names but holds nothing the window lacks; on holes
    that need no other file such chunks cost (eval/RESULTS.md, "Editor memory")."""
    caller = (
        "# shop/report.py\nfor order in orders:\n    prices = [item.price for item in order.cart]\n"
        "    print(compute_total(prices, tax_rate), order.cart)\n"
    )
    await _complete(fast, caller)
    assert "<|file_sep|>" not in await _complete(fast, CHECKOUT)
    await _complete(fast, PRICING)
    prompt = await _complete(fast, CHECKOUT + "c")
    assert "def compute_total" in prompt and "order.cart" not in prompt


async def test_chunks_only_like_the_window_are_not_given(fast: FastApp) -> None:
    """A definition that shares the window's words but none of whose names the window uses
    gives the model nothing it lacks: no chunk, until a window uses what it defines
    (eval/RESULTS.md, "Anchored")."""
    lookalike = (
        "def apply_discount(prices, tax_rate, cart):\n"
        "    subtotal = sum(item.price for item in cart)\n"
        "    return [price * (1 - tax_rate) for price in prices], subtotal\n"
    )
    await _complete(fast, lookalike)
    assert "<|file_sep|>" not in await _complete(fast, CHECKOUT)
    using = CHECKOUT.replace("compute_total", "apply_discount")
    assert "def apply_discount" in await _complete(fast, using)


async def test_a_signature_cut_by_a_chunk_brings_its_parameters(fast: FastApp) -> None:
    """``def __init__(`` at a chunk's end, its parameters in the next chunk (which defines
    nothing): the model needs both halves (eval/RESULTS.md, "Signatures cut by a chunk")."""
    await _complete(fast, SIGNATURE_CUT)
    prompt = await _complete(fast, CHECKOUT + "compute_total(prices, tax_rate, discount_code=")
    assert "def compute_total(" in prompt and "currency='EUR'" in prompt


@pytest.mark.parametrize("layout", ["chunks", "files"])
async def test_a_files_chunks_are_laid_out_apart_or_as_one_file(
    tmp_path: Path, layout: str
) -> None:
    """``memory_layout``: a file's chunks together, in their order, under one separator (the
    default), or each chunk under one of its own (eval/RESULTS.md)."""
    async with fast_app(tmp_path, n_ctx=4096, memory_layout=layout) as fast:
        await _complete(fast, SIGNATURE_CUT)
        prompt = await _complete(fast, CHECKOUT + "compute_total(prices, tax_rate, currency=")
        context = prompt[: prompt.index("<|fim_prefix|>")]
        head, cut = context.index("def compute_total("), context.index("    tax_rate,")
        assert head < cut and "currency='EUR'" in context
        separators = context[head:cut].count("<|file_sep|>")
        assert separators == (1 if layout == "chunks" else 0)
        assert context.count("<|file_sep|>") == (3 if layout == "chunks" else 2)


async def test_its_own_file_is_not_given_back(fast: FastApp) -> None:
    first = await _complete(fast, CHECKOUT)
    again = await _complete(fast, CHECKOUT + "compute_total(prices, tax_rate)\n    return ")
    assert "<|file_sep|>" not in first and "<|file_sep|>" not in again


async def test_keystrokes_keep_the_prompt_start(fast: FastApp) -> None:
    await _complete(fast, PRICING)
    prompts = [await _complete(fast, CHECKOUT + typed) for typed in ("c", "co", "com", "comp")]
    starts = {p[: p.index("<|fim_prefix|>")] for p in prompts}
    assert len(starts) == 1 and "def compute_total" in starts.pop()


async def test_a_file_shown_since_its_last_answer_is_news_to_it(fast: FastApp) -> None:
    """Typing in a file, looking at another, coming back: the prompt gets what was seen."""
    assert "<|file_sep|>" not in await _complete(fast, CHECKOUT)  # nothing remembered yet
    await _complete(fast, PRICING)
    assert "def compute_total" in await _complete(fast, CHECKOUT + "c")


async def test_a_prompt_keeps_its_start_unless_news_is_much_better(fast: FastApp) -> None:
    await _complete(fast, PRICING)
    first = await _complete(fast, CHECKOUT)
    await _complete(fast, UNRELATED)  # shown since, but nothing this file needs
    again = await _complete(fast, CHECKOUT + "c")
    start = first[: first.index("<|fim_prefix|>")]
    assert "def compute_total" in start and again.startswith(start)


async def test_client_context_stands_alone(fast: FastApp) -> None:
    """Continue's snippets are the client's choice of other files: memory adds none."""
    await _complete(fast, PRICING)
    snippets = "+++++ shop/cart.py \nclass Cart:\n    items = []\n\n+++++ shop/checkout.py\n"
    prompt = await _complete(fast, snippets + CHECKOUT)
    assert "<|file_sep|>shop/cart.py\nclass Cart:" in prompt
    assert "def compute_total" not in prompt


async def test_memory_can_add_beside_client_context(tmp_path: Path) -> None:
    """Where the deployment asks for it, memory's chunks come before the client's files, and
    never repeat them."""
    async with fast_app(tmp_path, n_ctx=4096, memory_beside_client_files=True) as fast:
        await _complete(fast, PRICING)
        await _complete(fast, "# shop/stock.py\ndef restock(item_count):\n    compute_total\n")
        snippets = f"+++++ shop/pricing.py \n{PRICING}\n+++++ shop/checkout.py\n"
        prompt = await _complete(fast, snippets + CHECKOUT + "restock(len(cart)) and ")
        assert prompt.count("def compute_total") == 1  # the client's copy, not memory's too
        assert prompt.index("def restock") < prompt.index("<|file_sep|>shop/pricing.py\n")


async def test_memory_never_crosses_workspaces(fast: FastApp) -> None:
    other = fast.workspace("other")
    fast.gateway.keys.set_memory("other", "workspace")
    fast.gateway.keys.set_memory("default", "workspace")
    await _complete(fast, PRICING, key=other)
    assert "def compute_total" not in await _complete(fast, CHECKOUT)
    assert "def compute_total" in await _complete(fast, CHECKOUT + "x", key=other)


async def test_another_keys_memory_only_where_the_workspace_shares(fast: FastApp) -> None:
    _, second = fast.gateway.keys.create_key("default", "second")
    await _complete(fast, PRICING, key=second)
    assert "def compute_total" not in await _complete(fast, CHECKOUT)
    fast.gateway.keys.set_memory("default", "workspace")  # the next request's key lookup
    assert "def compute_total" in await _complete(fast, "# another file\n" + CHECKOUT)


async def test_a_revoked_keys_memory_is_dropped(fast: FastApp) -> None:
    fast.gateway.keys.set_memory("default", "workspace")
    info, second = fast.gateway.keys.create_key("default", "leaving")
    await _complete(fast, PRICING, key=second)
    assert _memory(fast).chunks_of(info.id) > 0
    fast.gateway.keys.revoke(info.id)
    assert await forget_revoked(_memory(fast), fast.gateway.keys) == {info.id}
    assert _memory(fast).chunks_of(info.id) == 0
    assert "def compute_total" not in await _complete(fast, CHECKOUT)


async def test_a_workspace_can_turn_memory_off(fast: FastApp) -> None:
    fast.gateway.keys.set_memory("default", "off")
    await _complete(fast, PRICING)
    assert "def compute_total" not in await _complete(fast, CHECKOUT)
    assert _memory(fast).size == 0  # nothing kept either


def test_an_operator_sees_each_workspaces_memory(tmp_path: Path) -> None:
    env = {"FIMGATE_DATA_DIR": str(tmp_path)}
    for args in (["create", "acme"], ["create", "zeta"], ["memory", "zeta", "off"]):
        assert CliRunner().invoke(main, ["workspaces", *args], env=env).exit_code == 0
    listed = CliRunner().invoke(main, ["workspaces", "list"], env=env, terminal_width=200)
    rows = {line.split()[1]: line.split()[-2] for line in listed.output.splitlines()
            if line.startswith("│ ") and "workspace" not in line}  # fmt: skip
    assert rows["acme"] == "key" and rows["zeta"] == "off", listed.output


async def test_a_deployment_can_turn_memory_off(tmp_path: Path) -> None:
    async with fast_app(tmp_path, n_ctx=4096, editor_memory=False) as fast:
        await _complete(fast, PRICING)
        assert "def compute_total" not in await _complete(fast, CHECKOUT)
        assert _memory(fast).size == 0


def test_memory_is_bounded_whatever_many_editors_send() -> None:
    now = [0.0]
    memory = ContextMemory(max_bytes=2_000_000, clock=lambda: now[0])
    window = "\n".join(
        f"def compute_{i}(alpha_{i}, beta_{i}):\n    return beta_{i}" for i in range(30)
    )
    for key in range(400):
        for file in range(FILES_PER_KEY + 8):
            now[0] += 0.01
            text = f"# {key} {file}\n{window}"
            memory.remember(Scope(key % 7, f"k{key}"), f"file{file}", "", text)
    kept = list(memory._keys.values())
    assert memory.size <= 2_000_000
    assert memory.size == sum(c.size for m in kept for f in m.files.values() for c in f.chunks)
    assert all(len(m.files) <= FILES_PER_KEY and m.size <= BYTES_PER_KEY for m in kept)
    # And what is older than its age is forgotten when read.
    assert memory.recall(Scope(0, "k399"), "elsewhere", "compute_1 alpha_1 beta_1", 4000)
    now[0] += memory.ttl + 1
    assert memory.recall(Scope(0, "k399"), "elsewhere", "compute_1 alpha_1 beta_1", 4000) == []
    assert memory.size == 0
