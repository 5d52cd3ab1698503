"""Runs the real overlay widgets in their own process (Tk cannot outlive its X display in-process)
and reports what the widgets show as JSON lines; reads simple commands from stdin.

``python overlay_driver.py URL (both|SOURCE|session:ID) GEOMETRY``
Commands: ``adjust`` (font, opacity, click-through; replies with the results), ``quit``.
"""

import json
import queue
import sys
import threading
import tkinter as tk

from streamer_clients.client import Endpoint
from streamer_clients.overlay import Feed, OverlayWindow, pump, streams_for

url, what, geometry = sys.argv[1:4]
session = what.split(":", 1)[1] if what.startswith("session:") else None
streams = streams_for(None if session else what, session)
root = tk.Tk()
window = OverlayWindow(root, streams, geometry=geometry, font_size=20)
feed = Feed(Endpoint(url), streams)
feed.start()
commands: "queue.Queue[str]" = queue.Queue()
threading.Thread(target=lambda: [commands.put(line.strip()) for line in sys.stdin], daemon=True).start()


def report(**extra) -> None:
    state = {"texts": {s.label: window.text(s.label) for s in streams},
             "states": {k: [v[0].value, v[1]] for k, v in window.states.items()},
             "lines": {s.label: int(window.rows[s.label].cget("height")) for s in streams}, **extra}
    print(json.dumps(state), flush=True)


def tick() -> None:
    pump(window, feed)
    while not commands.empty():
        command = commands.get()
        if command == "quit":
            feed.stop()
            root.destroy()
            return
        if command == "adjust":
            window.set_font_size(26)
            window.set_opacity(0.6)
            report(adjusted={"font": window.font_size, "opacity": window.opacity,
                             "click_through": window.set_click_through(True)})
    report()
    root.after(100, tick)


root.after(100, tick)
root.mainloop()
