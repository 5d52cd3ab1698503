"""Global hotkeys on X11 (python-xlib): push-to-talk and pause/resume without focusing our window.

The keys are grabbed on the root window in a thread with its own X connection, for every
combination of the lock modifiers (Caps, Num) so they work whatever lock is on. X auto-repeat
turns a held key into release/press pairs with the same timestamp; those are folded away so
push-to-talk sees one press and one release.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

log = logging.getLogger("streamer.hotkeys")

KeyHandler = Callable[[str, bool], None]  # (key name, pressed)


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
        pushed_back = None
        while not self._stop.is_set():
            event, pushed_back = (pushed_back or self.display.next_event()), None
            if event.type not in (X.KeyPress, X.KeyRelease) or event.detail not in self.codes:
                continue
            if event.type == X.KeyRelease and self.display.pending_events():
                nxt = self.display.next_event()
                if nxt.type == X.KeyPress and nxt.detail == event.detail and nxt.time == event.time:
                    continue  # auto-repeat: the key is still held
                pushed_back = nxt
            self.loop.call_soon_threadsafe(self.handler, self.codes[event.detail], event.type == X.KeyPress)

    def close(self) -> None:
        self._stop.set()
        try:
            self.display.close()
        except Exception:
            pass
