"""Prometheus metrics of one daemon instance.

Each server owns its own :class:`~prometheus_client.CollectorRegistry`, so several servers
in one process (tests, benchmarks) never share or collide on counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

DECODE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
STALL_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """Every number the daemon exports; names are prefixed ``streamer_``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("streamer_sessions", "Live transcription sessions", registry=r)
        self.sessions_total = Counter("streamer_sessions_started", "Sessions started", registry=r)
        self.subscribers = Gauge("streamer_subscribers", "Listen-only caption subscribers", registry=r)
        self.audio_seconds = Counter("streamer_audio_seconds_total", "Seconds of 16 kHz audio received",
                                     registry=r)
        self.decode_seconds = Histogram("streamer_decode_seconds", "Wall time of one batched decode",
                                        buckets=DECODE_BUCKETS, registry=r)
        self.decode_audio_seconds = Counter("streamer_decoded_window_seconds_total",
                                            "Seconds of audio windows sent to the engine", registry=r)
        self.batch_size = Histogram("streamer_decode_batch_size", "Windows per batched decode",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=r)
        self.lag = Gauge("streamer_session_lag_seconds", "Audio received minus audio decoded, per session",
                         ["session"], registry=r)
        self.max_lag = Gauge("streamer_max_lag_seconds", "Largest per-session lag right now", registry=r)
        self.queue_depth = Gauge("streamer_queue_depth", "Sessions with a decode due but not yet running",
                                 registry=r)
        self.errors = Counter("streamer_errors_total", "Errors sent to clients, by code", ["code"], registry=r)
        self.loop_stall = Histogram("streamer_loop_stall_seconds", "Event-loop lateness per probe",
                                    buckets=STALL_BUCKETS, registry=r)
        self.loop_stall_max = Gauge("streamer_loop_stall_max_seconds", "Longest event-loop stall seen",
                                    registry=r)
        self.tasks = Gauge("streamer_asyncio_tasks", "asyncio tasks alive in the daemon (should stay flat)",
                           registry=r)
        self.ready = Gauge("streamer_model_ready", "1 when the model is loaded and warm", registry=r)
        self.utilisation = Gauge("streamer_engine_utilisation", "Engine busy fraction over the last 30 s",
                                 registry=r)
        self.headroom = Gauge("streamer_capacity_headroom", "More real-time streams the measured load allows "
                              "(+Inf before there is load to measure)", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
