"""Typing text into the focused window, per platform.

Linux X11 uses ``xdotool type`` (XTEST under the hood; it maps any Unicode character through a
spare keycode). Wayland has no standard way for one client to type into another, so ``wtype``
(wlroots compositors) or ``ydotool`` (uinput, any compositor, needs its daemon) stand in.
``stdout`` prints instead of typing, for trying dictation out or piping it elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys

BACKENDS = ("auto", "xdotool", "wtype", "ydotool", "stdout")


class TyperError(RuntimeError):
    """No way to type on this desktop; the message says what to install."""


def choose_backend(name: str = "auto") -> str:
    """The backend for this session: Wayland tools under Wayland, xdotool under X11."""
    if name != "auto":
        if name != "stdout" and not shutil.which(name):
            raise TyperError(f"{name} is not installed")
        return name
    wayland = bool(os.environ.get("WAYLAND_DISPLAY"))
    candidates = ("wtype", "ydotool", "xdotool") if wayland else ("xdotool",)
    for tool in candidates:
        if shutil.which(tool):
            return tool
    if not os.environ.get("DISPLAY") and not wayland:
        raise TyperError("no graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set); "
                         "use --typer stdout to print the text instead")
    raise TyperError("install xdotool (X11) or wtype/ydotool (Wayland) to type into windows, "
                     "or use --typer stdout")


def command_for(backend: str, text: str) -> list[str]:
    """The command that types ``text`` with ``backend``."""
    if backend == "xdotool":
        return ["xdotool", "type", "--clearmodifiers", "--delay", "8", "--", text]
    if backend == "wtype":
        return ["wtype", "--", text]
    if backend == "ydotool":
        return ["ydotool", "type", "--", text]
    raise ValueError(backend)


class Typer:
    """Types text strictly in order, one command at a time, without blocking the event loop."""

    def __init__(self, backend: str = "auto") -> None:
        self.backend = choose_backend(backend)
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.typed = ""

    def type(self, text: str) -> None:
        """Queue ``text``; it is typed after everything queued before it."""
        if text:
            self.queue.put_nowait(text)

    async def run(self) -> None:
        """Drain the queue until ``close``."""
        while (text := await self.queue.get()) is not None:
            await self._type_now(text)
            self.typed += text

    async def close(self) -> None:
        """Type what is queued, then stop ``run``."""
        self.queue.put_nowait(None)

    async def _type_now(self, text: str) -> None:
        if self.backend == "stdout":
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        proc = await asyncio.create_subprocess_exec(*command_for(self.backend, text),
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode:
            raise TyperError(f"{self.backend} failed ({proc.returncode}): {err.decode(errors='replace').strip()}")
