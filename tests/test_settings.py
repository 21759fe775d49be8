"""One settings tree: every command's flags, variables and defaults come from it, and the
docs' table is it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fimgate import modelpack
from fimgate.cli import main
from fimgate.settings import ENV_PREFIX, SECTIONS, Settings, default_text, fields, markdown_table

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent


def test_the_docs_table_is_the_tree() -> None:
    docs = (ROOT / "docs/operations.md").read_text()
    assert markdown_table() in docs, "run `fimgate settings --markdown` into docs/operations.md"


def test_every_variable_names_one_setting() -> None:
    names = [name for section in SECTIONS.values() for name in section.model_fields]
    assert len(names) == len(set(names)) == len(fields())


def test_variables_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIMGATE_N_CTX", "1024")
    monkeypatch.setenv("FIMGATE_REGIONS", "eu, us")
    monkeypatch.setenv("FIMGATE_WINDOW_RECALL", "false")
    settings = Settings()
    assert settings.engine.n_ctx == 1024 and settings.server.regions == ["eu", "us"]
    assert settings.engine.window_recall is False
    assert Settings.load(n_ctx=2048).engine.n_ctx == 2048  # a flag wins
    with pytest.raises(KeyError):
        Settings.load(no_such_setting=1)


@pytest.mark.parametrize("command", [["serve"], ["engine-server"], ["keys", "list"]])
def test_each_flag_shows_the_default_the_code_uses_and_its_variable(command: list[str]) -> None:
    help_text = CliRunner().invoke(main, [*command, "--help"], terminal_width=400).output
    flat = re.sub(r"\s+", " ", help_text)
    shown = re.findall(r"\[default: (.*?); (FIMGATE_\w+)\]", flat)
    assert shown, help_text
    known = fields()
    for default, variable in shown:
        info = known[variable.removeprefix(ENV_PREFIX).lower()]
        assert default == re.sub(r"\s+", " ", default_text(info)), variable


def test_serve_has_a_flag_for_every_setting_but_secrets_and_engine_server_s() -> None:
    help_text = CliRunner().invoke(main, ["serve", "--help"], terminal_width=400).output
    for name in fields():
        variable = f"{ENV_PREFIX}{name.upper()}"
        expected = name != "metrics_token" and not name.startswith("engine_")
        assert (variable in help_text) == expected, variable


def test_engine_server_reads_fimgate_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped unit and compose file set FIMGATE_DATA_DIR for engine-server: it is read,
    with the model and llama.cpp's settings (stopped where it would load the model)."""
    seen: dict[str, object] = {}

    def locate(name: str, data_dir: Path) -> Path:
        seen.update(name=name, data_dir=data_dir)
        raise modelpack.ModelPackError("stop here")

    monkeypatch.setattr(modelpack, "locate", locate)
    monkeypatch.setenv("FIMGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FIMGATE_MODELS", "qwen2.5-coder-0.5b")
    result = CliRunner().invoke(main, ["engine-server"])
    assert result.exit_code == 1 and "stop here" in result.output
    assert seen == {"name": "qwen2.5-coder-0.5b", "data_dir": tmp_path}


def test_a_bad_value_is_a_usage_error_naming_it() -> None:
    result = CliRunner().invoke(main, ["settings", "--n-ctx", "5"])
    assert result.exit_code == 2 and "n_ctx" in result.output
