"""The bundled sample recording: a data package so the wheel ships it as ``streamer.samples``."""
