"""``load_engine(config)``: the one entry point from configuration to a ready engine.

``engine.backend`` picks the implementation from :data:`BACKENDS`. Entries are loader
callables or ``"module:function"`` strings imported only when chosen, so an optional
backend's dependencies are never imported by users of another. Adding a backend is one
module with a ``load_*(config) -> Engine`` function and one line here.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Callable

from streamer.config import EngineConfig
from streamer.hypothesis import Engine, EngineError

log = logging.getLogger(__name__)

Loader = Callable[[EngineConfig], Engine]

BACKENDS: dict[str, str | Loader] = {
    "whisper": "streamer.engine.whisper:load_whisper",
    "faster-whisper": "streamer.engine.faster_whisper:load_faster_whisper",
}


def backend_loader(name: str) -> Loader:
    """The loader registered for ``name``, imported on first use."""
    entry = BACKENDS.get(name)
    if entry is None:
        raise EngineError(f"unknown engine backend {name!r}; known backends: {', '.join(sorted(BACKENDS))}")
    if callable(entry):
        return entry
    module, _, function = entry.partition(":")
    return getattr(importlib.import_module(module), function)


def load_engine(config: EngineConfig | None = None, **overrides) -> Engine:
    """Load (and warm up) the engine described by ``config``; keyword overrides win (and are validated)."""
    config = EngineConfig.model_validate({**(config or EngineConfig()).model_dump(), **overrides})
    loader = backend_loader(config.backend)
    started = time.perf_counter()
    engine = loader(config)
    log.info("engine %s (%s) ready on %s (%s) in %.1f s", engine.name, config.backend, engine.device, engine.dtype,
             time.perf_counter() - started)
    return engine
