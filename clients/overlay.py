"""``streamer overlay``: a frameless, always-on-top, semi-transparent caption bar (Tk).

It shows the last lines of captions of the daemon's microphone, of the system audio (the
``monitor`` source: what the other people in a meeting say), of both as two labelled rows, or of
any session. Drag it with the left button, resize it from the bottom-right corner, change the font
with the mouse wheel and the opacity with Shift+wheel; right-click for a menu. Where the platform
allows (X11 with the SHAPE extension), ``--click-through`` lets clicks pass to the window below.

Networking runs on an asyncio loop in a background thread; Tk stays on the main thread and
polls a queue, so a slow or dead daemon never freezes the bar.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import queue
import sys
import threading
from dataclasses import dataclass
from typing import Any

from streamer_clients import client
from streamer_clients.client import Endpoint, State, Transcript

log = logging.getLogger("streamer.overlay")

KEEP_CHARS = 600  # committed text kept per row: far more than two lines, bounded for long meetings
STATE_COLORS = {State.CONNECTED: "#3ecf6e", State.CONNECTING: "#f2b23a", State.RECONNECTING: "#f2b23a",
                State.CLOSED: "#ef5a5a"}
LABELS = {"mic": "Me", "monitor": "Others"}


@dataclass(frozen=True)
class StreamSpec:
    """One caption row: a daemon source or a session, and the label shown before it."""

    label: str
    source: str | None = None
    session: str | None = None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("overlay", help="always-on-top caption bar for the mic, system audio or a session",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--source", default="mic",
                      help="mic, monitor (system audio), both (two labelled rows) or any published source name")
    what.add_argument("--session", help="follow one session by id")
    p.add_argument("--lines", type=int, default=2, help="caption lines per row (default 2)")
    p.add_argument("--font-size", type=int, default=22)
    p.add_argument("--opacity", type=float, default=0.82, help="0.2-1.0 (needs a compositing window manager)")
    p.add_argument("--geometry", default=None, help="WIDTHxHEIGHT+X+Y (default: bottom centre of the screen)")
    p.add_argument("--click-through", action="store_true", help="let mouse clicks pass through (X11 SHAPE)")
    p.add_argument("--no-labels", dest="labels", action="store_false", help="hide the row labels")
    client.add_endpoint_args(p)
    p.set_defaults(func=main)


def streams_for(source: str | None, session: str | None) -> list[StreamSpec]:
    """The rows to show for ``--source``/``--session``."""
    if session:
        return [StreamSpec(f"Session {session[:8]}", session=session)]
    if source == "both":
        return [StreamSpec(LABELS["mic"], source="mic"), StreamSpec(LABELS["monitor"], source="monitor")]
    name = source or "mic"
    return [StreamSpec(LABELS.get(name, name), source=name)]


class Feed:
    """Background thread: one ``/v1/captions`` subscription per row, events into a queue for Tk."""

    def __init__(self, endpoint: Endpoint, streams: list[StreamSpec]) -> None:
        self.endpoint, self.streams = endpoint, streams
        self.updates: queue.Queue[tuple[str, str, Any]] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="overlay-feed", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive() and self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # every subscription already ended and the loop closed
                pass
        self.thread.join(5)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        await asyncio.gather(*(self._follow(spec) for spec in self.streams))

    async def _follow(self, spec: StreamSpec) -> None:
        transcript = Transcript()
        committed = ""

        def on_event(event: dict[str, Any]) -> None:
            nonlocal committed
            kind = event.get("type")
            if kind == "transcript":
                committed = (committed + "".join(w.word for w in transcript.apply(event)))[-KEEP_CHARS:]
                transcript.committed.clear()  # the row keeps text, not an ever-growing word list
                self.updates.put((spec.label, "text", (committed, transcript.tentative_text)))
            elif kind == "end":
                transcript.finish_segment()
                self.updates.put((spec.label, "text", (committed, "")))
            elif kind == "error":
                self.updates.put((spec.label, "error", f"{event.get('code')}: {event.get('message')}"))

        def on_state(state: State, detail: str) -> None:
            self.updates.put((spec.label, "state", (state, detail)))

        try:
            await client.subscribe(self.endpoint, on_event, on_state, source=spec.source, session=spec.session,
                                   stop=self._stop)
        except Exception as exc:  # a wrong token or an unknown session: show it, stop this row
            self.updates.put((spec.label, "state", (State.CLOSED, str(exc))))


class OverlayWindow:
    """The caption bar: one Text row per stream, committed text bright, tentative tail dimmed."""

    def __init__(self, root: Any, streams: list[StreamSpec], *, lines: int = 2, font_size: int = 22,
                 opacity: float = 0.82, geometry: str | None = None, click_through: bool = False,
                 labels: bool = True) -> None:
        import tkinter as tk

        self.tk, self.root = tk, root
        self.lines, self.font_size = lines, font_size
        self.opacity = min(1.0, max(0.2, opacity))
        self.rows: dict[str, Any] = {}
        self.badges: dict[str, Any] = {}
        self.states: dict[str, tuple[State, str]] = {}
        self.click_through = False
        root.title("streamer overlay")
        root.configure(bg="#101317")
        root.overrideredirect(True)
        root.attributes("-topmost", True)
        self._apply_opacity()
        for i, spec in enumerate(streams):
            self._add_row(i, spec, labels)
        root.columnconfigure(1, weight=1)
        self.grip = tk.Frame(root, bg="#4a5562", width=12, height=12, cursor="bottom_right_corner")
        self.grip.place(relx=1.0, rely=1.0, anchor="se")
        self._bind()
        root.geometry(geometry or self._default_geometry(len(streams)))
        root.update_idletasks()
        if click_through:
            self.set_click_through(True)

    def _add_row(self, i: int, spec: StreamSpec, labels: bool) -> None:
        tk = self.tk
        badge = tk.Label(self.root, text=f"● {spec.label}" if labels else "●", fg="#8a96a3", bg="#101317",
                         font=("DejaVu Sans", max(9, self.font_size // 2), "bold"), anchor="nw")
        badge.grid(row=i, column=0, sticky="nw", padx=(10, 6), pady=6)
        text = tk.Text(self.root, height=self.lines, wrap="word", bd=0, highlightthickness=0, bg="#101317",
                       fg="#f4f6f8", font=("DejaVu Sans", self.font_size), padx=4, pady=4, cursor="arrow")
        text.tag_configure("tentative", foreground="#8a96a3")
        text.grid(row=i, column=1, sticky="nsew", padx=(0, 14), pady=4)
        text.configure(state="disabled")
        self.root.rowconfigure(i, weight=1)
        self.rows[spec.label], self.badges[spec.label] = text, badge

    def _default_geometry(self, rows: int) -> str:
        width = min(1100, int(self.root.winfo_screenwidth() * 0.8))
        height = rows * (self.lines * int(self.font_size * 1.6) + 18)
        x = (self.root.winfo_screenwidth() - width) // 2
        y = self.root.winfo_screenheight() - height - 60
        return f"{width}x{height}+{x}+{max(0, y)}"

    # ----------------------------------------------------------------- content
    def show(self, label: str, committed: str, tentative: str) -> None:
        """Replace a row's text; the view follows the end, so the last ``lines`` lines show."""
        text = self.rows[label]
        text.configure(state="normal")
        text.delete("1.0", "end")
        text.insert("end", committed.lstrip(), "committed")
        text.insert("end", tentative if committed.strip() else tentative.lstrip(), "tentative")
        text.configure(state="disabled")
        text.see("end")

    def set_state(self, label: str, state: State, detail: str = "") -> None:
        """The row's dot: green connected, amber (re)connecting, red closed."""
        self.badges[label].configure(fg=STATE_COLORS.get(state, "#8a96a3"))
        self.states[label] = (state, detail)

    def text(self, label: str) -> str:
        """What a row shows now (tests and accessibility)."""
        return self.rows[label].get("1.0", "end-1c")

    # ----------------------------------------------------------------- interaction
    def _bind(self) -> None:
        for widget in [self.root, *self.rows.values(), *self.badges.values()]:
            widget.bind("<ButtonPress-1>", self._drag_start)
            widget.bind("<B1-Motion>", self._drag_move)
            widget.bind("<MouseWheel>", self._wheel)
            widget.bind("<Button-4>", lambda e: self._wheel(e, +1))
            widget.bind("<Button-5>", lambda e: self._wheel(e, -1))
            widget.bind("<Button-3>", self._menu)
        self.grip.bind("<ButtonPress-1>", self._resize_start)
        self.grip.bind("<B1-Motion>", self._resize_move)
        self.root.bind("<Escape>", lambda e: self.root.destroy())

    def _drag_start(self, event: Any) -> None:
        self._drag = (event.x_root - self.root.winfo_x(), event.y_root - self.root.winfo_y())

    def _drag_move(self, event: Any) -> None:
        dx, dy = self._drag
        self.root.geometry(f"+{event.x_root - dx}+{event.y_root - dy}")

    def _resize_start(self, event: Any) -> None:
        self._size = (self.root.winfo_width(), self.root.winfo_height(), event.x_root, event.y_root)

    def _resize_move(self, event: Any) -> None:
        w, h, x0, y0 = self._size
        self.root.geometry(f"{max(240, w + event.x_root - x0)}x{max(40, h + event.y_root - y0)}")

    def _wheel(self, event: Any, direction: int | None = None) -> None:
        step = direction if direction is not None else (1 if event.delta > 0 else -1)
        if event.state & 0x0001:  # Shift: opacity
            self.set_opacity(self.opacity + 0.05 * step)
        else:
            self.set_font_size(self.font_size + 2 * step)

    def _menu(self, event: Any) -> None:
        menu = self.tk.Menu(self.root, tearoff=0)
        menu.add_command(label="Larger text", command=lambda: self.set_font_size(self.font_size + 2))
        menu.add_command(label="Smaller text", command=lambda: self.set_font_size(self.font_size - 2))
        menu.add_command(label="More opaque", command=lambda: self.set_opacity(self.opacity + 0.1))
        menu.add_command(label="More transparent", command=lambda: self.set_opacity(self.opacity - 0.1))
        menu.add_command(label="Click-through", command=lambda: self.set_click_through(True))
        menu.add_separator()
        menu.add_command(label="Quit", command=self.root.destroy)
        menu.tk_popup(event.x_root, event.y_root)

    def set_font_size(self, size: int) -> None:
        self.font_size = max(10, min(96, size))
        for text in self.rows.values():
            text.configure(font=("DejaVu Sans", self.font_size))

    def set_opacity(self, value: float) -> None:
        self.opacity = max(0.2, min(1.0, value))
        self._apply_opacity()

    def _apply_opacity(self) -> None:
        try:
            self.root.attributes("-alpha", self.opacity)
        except self.tk.TclError:
            pass  # no compositing support: stays opaque

    def set_click_through(self, enabled: bool) -> bool:
        """Empty the window's input shape (X11 SHAPE) so clicks reach the window below."""
        self.click_through = enabled and _x11_click_through(self.root)
        return self.click_through


def _x11_click_through(root: Any) -> bool:
    try:
        from Xlib import X, display
        from Xlib.ext import shape
    except ImportError:
        log.warning("click-through needs python-xlib (pip install 'streamer[desktop]')")
        return False
    try:
        d = display.Display()
        if not d.has_extension("SHAPE"):
            log.warning("click-through: the X server has no SHAPE extension")
            return False
        frame = int(root.wm_frame(), 16) or root.winfo_id()
        d.create_resource_object("window", frame).shape_rectangles(shape.SO.Set, shape.SK.Input, X.Unsorted,
                                                                   0, 0, [])
        d.sync()
        d.close()
        return True
    except Exception as exc:  # Wayland (XWayland ok), odd servers
        log.warning("click-through unavailable: %s", exc)
        return False


def pump(window: OverlayWindow, feed: Feed) -> None:
    """Apply queued feed updates to the window (Tk thread)."""
    while True:
        try:
            label, kind, payload = feed.updates.get_nowait()
        except queue.Empty:
            return
        if kind == "text":
            window.show(label, *payload)
        elif kind == "state":
            window.set_state(label, *payload)
        elif kind == "error":
            log.warning("%s: %s", label, payload)


def main(args: argparse.Namespace) -> int:
    try:
        import tkinter as tk
        root = tk.Tk()
    except Exception as exc:  # no tkinter, or no display
        print(f"streamer overlay: cannot open a window: {exc} (needs Tk and a graphical session)", file=sys.stderr)
        return 1
    streams = streams_for(args.source, args.session)
    window = OverlayWindow(root, streams, lines=args.lines, font_size=args.font_size, opacity=args.opacity,
                           geometry=args.geometry, click_through=args.click_through, labels=args.labels)
    feed = Feed(client.resolve_endpoint(args), streams)
    feed.start()

    def tick() -> None:
        pump(window, feed)
        root.after(50, tick)

    root.after(50, tick)
    try:
        root.mainloop()
    except KeyboardInterrupt:
        pass
    feed.stop()
    return 0
