"""The runtime is the server: nothing under fimgate/ imports evaluation (fimgate_eval/), the
benchmarks (bench/) or evaluation's own dependencies, and `fimgate eval` comes in through the
entry-point group `fimgate.commands`, imported only when it is used."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "fimgate"
# Top-level names the runtime must not import: evaluation, the benchmarks, and what only
# evaluation needs (the `eval` extra).
FORBIDDEN = ("fimgate_eval", "bench", "rapidfuzz")


def _forbidden(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in FORBIDDEN


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, dynamic ones by a constant name included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_runtime_source_imports_no_evaluation() -> None:
    files = sorted(RUNTIME.rglob("*.py"))
    assert len(files) > 30, "fimgate/ not found where expected"
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in files
        for line, module in _imports(path)
        if _forbidden(module)
    ]
    assert not bad, "the runtime imports evaluation or bench code:\n" + "\n".join(bad)


# Every runtime module (Alembic's scripts run only under Alembic), then what was imported.
_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import fimgate
names = [m.name for m in pkgutil.walk_packages(fimgate.__path__, "fimgate.")
         if ".migrations" not in m.name]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
"""


def test_importing_the_runtime_loads_no_evaluation() -> None:
    import json

    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"a runtime module does not import:\n{done.stderr}"
    result = json.loads(done.stdout.splitlines()[-1])
    assert {"fimgate.cli", "fimgate.api.app", "fimgate.engines.loading"} <= set(result["imported"])
    loaded = [m for m in result["modules"] if _forbidden(m)]
    assert not loaded, f"importing fimgate/ loaded {loaded}"


def test_eval_is_an_entry_point_loaded_when_used() -> None:
    from click.testing import CliRunner

    from fimgate.cli import main
    from fimgate.cli_plugins import _EntryPointCommand

    command = main.commands["eval"]
    assert isinstance(command, _EntryPointCommand)
    assert command.entry_point.value == "fimgate_eval.cli:eval_command"
    result = CliRunner().invoke(main, ["eval", "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: main eval [OPTIONS]" in result.output
    for option in ("--suite", "--data", "--wires", "--resume"):
        assert option in result.output


# `fimgate` without the `eval` extra: the other commands work, `eval` says what to install.
_WITHOUT_EXTRA = """
import sys
sys.modules["rapidfuzz"] = None  # an import of it fails, as when it is not installed
from click.testing import CliRunner
from fimgate.cli import main
runner = CliRunner()
for args in (["--help"], ["models", "--help"], ["eval", "--suite", "editor"]):
    result = runner.invoke(main, args)
    print(result.exit_code, result.output.replace("\\n", " "))
"""


def test_cli_works_without_the_eval_extra() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRA], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    top, models, evaluation = done.stdout.splitlines()
    assert top.startswith("0 ") and "serve" in top and "fimgate[eval]" in top
    assert models.startswith("0 ") and "assemble" in models
    assert evaluation.startswith("1 ") and "pip install 'fimgate[eval]'" in evaluation


MAX_FUNCTION_LINES = 60


def test_functions_in_the_runtime_stay_short() -> None:
    """A function that does not fit on a screen is several (migrations aside: Alembic's)."""
    long = []
    for path in RUNTIME.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert not long, long
