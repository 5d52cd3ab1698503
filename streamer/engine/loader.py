"""``load_engine(config)``: the one entry point from configuration to a ready engine."""

from __future__ import annotations

import logging
import time

from streamer.config import EngineConfig
from streamer.hypothesis import Engine

log = logging.getLogger(__name__)


def load_engine(config: EngineConfig | None = None, **overrides) -> Engine:
    """Load (and warm up) the Whisper engine described by ``config``; keyword overrides win."""
    config = (config or EngineConfig()).model_copy(update=overrides)
    from streamer.engine.whisper import load_whisper

    started = time.perf_counter()
    engine = load_whisper(config)
    log.info("engine %s ready on %s (%s) in %.1f s", config.model, engine.device, engine.dtype,
             time.perf_counter() - started)
    return engine
