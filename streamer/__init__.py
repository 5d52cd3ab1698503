"""streamer: real-time Whisper transcription daemon.

Pipeline stages live in their own modules, after faster-whisper's layout:
``audio`` (decode/resample), ``vad`` (silero-vad), ``engine`` (Whisper),
``core`` (the sans-I/O streaming policy), ``daemon`` (asyncio shell).
"""

__version__ = "0.1.0"
