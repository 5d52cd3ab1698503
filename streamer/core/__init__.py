"""The sans-I/O streaming core: VAD gating, rolling buffer, LocalAgreement, guards, prompts.

No asyncio, sockets, wall clock or model code in here: callers feed audio and hypotheses.
"""

from streamer.core.events import TranscriptEvent
from streamer.core.stream import StreamProcessor, run_until_idle

__all__ = ["StreamProcessor", "TranscriptEvent", "run_until_idle"]
