"""A plain Tk text box that receives typed keys; its content is mirrored to a file for the test.

Run as a subprocess under Xvfb: ``python tk_target.py OUT_FILE``. It grabs the keyboard focus so
xdotool's synthetic keys land in it, as they would in any focused editor.
"""

import sys
import tkinter as tk
from pathlib import Path

out = Path(sys.argv[1])
root = tk.Tk()
root.title("dictation target")
root.geometry("800x300+0+0")
text = tk.Text(root, font=("DejaVu Sans", 14))
text.pack(fill="both", expand=True)


def mirror() -> None:
    out.write_text(text.get("1.0", "end-1c"))
    text.focus_force()
    root.after(100, mirror)


root.after(200, mirror)
root.mainloop()
