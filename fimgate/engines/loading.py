"""What ``serve`` answers with: the packaged model in-process (the default), or upstream
servers (``--upstream``, a backends file). Checked before the server starts; loaded at start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fimgate import modelpack
from fimgate.engines.base import EngineError
from fimgate.engines.fim_engine import FimEngine, embedded_engine
from fimgate.engines.registry import ModelRegistry, ServedModel
from fimgate.engines.upstreams import ModelSpec, UpstreamSpec, read_backends, router_for
from fimgate.settings import EngineSettings

# Names that clients configured for the hosted service send; they resolve to our default model
# so a Continue or SDK config written for Codestral works unchanged.
CODESTRAL_ALIASES = ("codestral-latest", "codestral-2501", "codestral-2405")


def served_name(name_or_path: str) -> str:
    if name_or_path in modelpack.PACKAGED_MODELS:
        return name_or_path
    return Path(name_or_path).name.removesuffix(".gguf")


def model_loader(
    settings: EngineSettings, data_dir: Path
) -> tuple[Callable[[], ModelRegistry], str]:
    """The loader ``serve`` runs at start-up, and what it will load, in words. Raises
    ``modelpack.ModelPackError`` or ``EngineError`` for what is wrong before anything starts."""
    if settings.upstreams and settings.backends_file:
        raise EngineError("give --upstream or a backends file, not both")
    if settings.backends_file:
        specs = read_backends(settings.backends_file)
    elif settings.upstreams:
        name = served_name(settings.models[0])
        upstreams = [UpstreamSpec.from_url(url) for url in settings.upstreams]
        specs = [ModelSpec(name=name, upstream=upstreams)]
    else:
        return _embedded(settings, data_dir)

    def load() -> ModelRegistry:
        registry = ModelRegistry()
        for i, spec in enumerate(specs):
            aliases = spec.aliases if spec.aliases is not None else CODESTRAL_ALIASES * (i == 0)
            urls = ", ".join(u.url for u in spec.upstream)
            router = router_for(spec.upstream, settings, spec.name, settings.backends_file)
            registry.add(
                ServedModel(
                    name=spec.name,
                    engine=FimEngine(router, settings, registry.sessions),
                    aliases=tuple(aliases),
                    description=f"upstream {urls}",
                )
            )
        return registry

    where = "; ".join(f"{s.name} from {', '.join(u.url for u in s.upstream)}" for s in specs)
    return load, where


def _embedded(settings: EngineSettings, data_dir: Path) -> tuple[Callable[[], ModelRegistry], str]:
    paths = [modelpack.locate(m, data_dir) for m in settings.models]

    def load() -> ModelRegistry:
        registry = ModelRegistry()
        for i, (name, path) in enumerate(zip(settings.models, paths, strict=True)):
            packaged = modelpack.PACKAGED_MODELS.get(name)
            registry.add(
                ServedModel(
                    name=served_name(name),
                    engine=embedded_engine(path, settings, registry.sessions),
                    aliases=CODESTRAL_ALIASES if i == 0 else (),
                    description=packaged.summary if packaged else f"local GGUF {path}",
                )
            )
        return registry

    return load, ", ".join(settings.models)
