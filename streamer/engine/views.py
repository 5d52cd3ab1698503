"""Cheap variants of a loaded engine: the same weights and decoders under another word-timing method or draft setting.

``streamer bench align`` compares word-timing methods on one engine; a view is a shallow copy
with its own (validated) config, so nothing outside the engine ever changes a loaded engine.
"""

from __future__ import annotations

import copy
from typing import TypeVar

from streamer.config import EngineConfig

E = TypeVar("E", bound="WordTimingViews")


class WordTimingViews:
    """Mixed into engines that hold an :class:`EngineConfig` and report ``last_timing``."""

    config: EngineConfig
    last_timing: dict[str, float]

    def with_word_timestamps(self: E, method: str) -> E:
        """This engine timing words by ``method`` (dtw, segments, both); weights are shared, not copied."""
        return self._view(word_timestamps=method)

    def with_fused_alignment(self: E, on: bool) -> E:
        """This engine taking word-timing evidence from the decode loop (True) or a second pass (False)."""
        return self._view(fused_alignment=on)

    def with_drafts(self: E, on: bool) -> E:
        """This engine with draft verification on or off (``streamer bench drafts`` compares them)."""
        return self._view(drafts=on)

    def with_encoder_buckets(self: E, buckets: list[float]) -> E:
        """This engine running the encoder on bucketed window lengths ([] = always 30 s)."""
        return self._view(encoder_buckets=buckets)

    def with_beam_size(self: E, beam_size: int) -> E:
        """This engine decoding with a beam of ``beam_size`` (1 = greedy)."""
        return self._view(beam_size=beam_size)

    def _view(self: E, **changes) -> E:
        view = copy.copy(self)
        view.config = EngineConfig.model_validate({**self.config.model_dump(), **changes})
        view.last_timing = {}
        return view
