"""Which compatibility surfaces the daemon serves, from the ``[compat]`` settings.

Imported by the server when it is built; each surface module is imported only when enabled.
"""

from __future__ import annotations

from streamer.config import Settings


def default_surfaces(settings: Settings) -> list:
    """The enabled surfaces: objects with ``routes(server)`` (and optionally ``refusal``)."""
    surfaces: list = []
    if settings.compat.openai:
        from streamer.compat.openai_realtime import OpenAIRealtime
        from streamer.compat.openai_rest import OpenAIRest

        surfaces += [OpenAIRest(), OpenAIRealtime()]
    return surfaces
