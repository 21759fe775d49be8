"""The prompt token ids the engine builds for the editor suite's holes (bare and Continue's
three wire formats) and for the keystroke replay's editors, as JSON: run it on two commits
(``PYTHONPATH=OTHER_CHECKOUT``) and compare, to show a change to the engine leaves what the
model reads untouched.

    python bench/prompt_identity.py OUT.json [--model qwen2.5-coder-0.5b]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from workloads import editors

from fimgate.engines.base import FimJob
from fimgate.modelpack import locate
from fimgate_eval.continue_wire import render
from fimgate_eval.editor_holes import load

WIRES = ("bare", "codestral", "qwen", "comments")


def engine(model: str):
    """The embedded engine as ``serve`` builds it, at this commit or an earlier one."""
    from fimgate.engines.fim_engine import embedded_engine

    try:  # one settings tree (issue 26)
        from fimgate.settings import EngineSettings, StoreSettings

        settings = EngineSettings(threads=2, n_parallel=1, suggestions=False)
        return embedded_engine(locate(model, StoreSettings().data_dir), settings)
    except ImportError:  # before it
        from fimgate.config import Settings

        flat = Settings(threads=2, n_parallel=1, suggestions=False)
        return embedded_engine(locate(model, flat.data_dir), flat)


def editor(name: str) -> object:
    """Who typed: an Editor since issue 26, the key's id before."""
    try:
        from fimgate.engines.base import Editor

        return Editor(name, "m")
    except ImportError:
        return name


def ids_of(payload: object) -> dict:
    prompt = getattr(payload, "prompt", payload)  # the split engine wraps the built prompt
    heal = prompt.heal
    return {"ids": prompt.ids, "heal": [heal.ids[-3:], heal.text, heal.taken] if heal else None}


async def main_async(out: Path, model: str) -> None:
    made = engine(model)
    found: dict[str, dict] = {}
    for task in load():
        for wire in WIRES:
            prompt, suffix = render(task, wire) if wire != "bare" else (task.prefix, task.suffix)
            job = FimJob(prompt, suffix, 16, editor=editor(f"{task.name}:{wire}"))
            found[f"{task.name}:{wire}"] = ids_of((await made.encode(job)).payload)
    for n, session in enumerate(editors(4, 24)):
        for k, typed in enumerate(session):
            job = FimJob(typed.prefix, typed.suffix, 16, editor=editor(f"editor-{n}"))
            found[f"replay:{n}:{k}"] = ids_of((await made.encode(job)).payload)
    out.write_text(json.dumps(found))
    await made.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    args = parser.parse_args()
    asyncio.run(main_async(args.out, args.model))


if __name__ == "__main__":
    main()
