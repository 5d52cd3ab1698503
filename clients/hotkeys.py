"""Global hotkeys on X11 (python-xlib): push-to-talk and pause/resume without focusing our window.

The keys are grabbed on the root window in a thread with its own X connection, for every
combination of the lock modifiers (Caps, Num) so they work whatever lock is on. X auto-repeat
turns a held key into release/press pairs; those are folded away so push-to-talk sees one press
and one release.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

log = logging.getLogger("streamer.hotkeys")

KeyHandler = Callable[[str, bool], None]  # (key name, pressed)
REPEAT_WINDOW = 0.08  # seconds a release waits for an auto-repeat press before it counts


class HotkeyError(RuntimeError):
    """Global hotkeys are unavailable (no X11, no python-xlib, key taken)."""


class X11Hotkeys:
    """Grab ``keys`` (X keysym names such as "F9", "Pause", "Scroll_Lock") and report press/release."""

    def __init__(self, keys: list[str], handler: KeyHandler, loop: asyncio.AbstractEventLoop) -> None:
        try:
            from Xlib import X, XK, display
            from Xlib.error import DisplayError
        except ImportError as exc:
            raise HotkeyError("global hotkeys need python-xlib: pip install 'streamer[desktop]'") from exc
        try:
            self.display = display.Display()
        except (DisplayError, Exception) as exc:  # no DISPLAY, refused connection
            raise HotkeyError(f"cannot open the X display for hotkeys: {exc}") from exc
        self._X = X
        self.handler, self.loop = handler, loop
        self.root = self.display.screen().root
        self.codes: dict[int, str] = {}
        for name in keys:
            keysym = XK.string_to_keysym(name)
            code = self.display.keysym_to_keycode(keysym) if keysym else 0
            if not code:
                raise HotkeyError(f"unknown key {name!r} (use an X keysym name such as F9 or Pause)")
            self.codes[code] = name
        self._grab()
        self._stop = threading.Event()
        self._down: set[str] = set()
        self._releases: dict[str, asyncio.TimerHandle] = {}
        self.thread = threading.Thread(target=self._run, name="x11-hotkeys", daemon=True)

    def _grab(self) -> None:
        X = self._X
        lock_masks = (0, X.LockMask, X.Mod2Mask, X.LockMask | X.Mod2Mask)
        for code in self.codes:
            for mask in lock_masks:
                self.root.grab_key(code, mask, True, X.GrabModeAsync, X.GrabModeAsync)
        self.display.sync()

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self._loop_events()
        except Exception as exc:  # display closed under us at exit, or the X server went away
            if not self._stop.is_set():
                log.warning("hotkey thread stopped: %s", exc)

    def _loop_events(self) -> None:
        X = self._X
        while not self._stop.is_set():
            event = self.display.next_event()
            if event.type in (X.KeyPress, X.KeyRelease) and event.detail in self.codes:
                name = self.codes[event.detail]
                self.loop.call_soon_threadsafe(self._key, name, event.type == X.KeyPress)

    def _key(self, name: str, pressed: bool) -> None:
        """On the event loop: report a press once, and a release only if no press follows at once.

        X auto-repeat sends release/press pairs while a key is held, and the press may arrive a
        moment after the release, so a release is confirmed after ``REPEAT_WINDOW`` seconds.
        """
        pending = self._releases.pop(name, None)
        if pressed:
            if pending is not None:
                pending.cancel()  # auto-repeat: still held
            if name not in self._down:
                self._down.add(name)
                self.handler(name, True)
            return
        if pending is not None:
            pending.cancel()
        self._releases[name] = self.loop.call_later(REPEAT_WINDOW, self._released, name)

    def _released(self, name: str) -> None:
        self._releases.pop(name, None)
        self._down.discard(name)
        self.handler(name, False)

    def close(self) -> None:
        self._stop.set()
        try:
            self.display.close()
        except Exception:
            pass
