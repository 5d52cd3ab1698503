"""Spoken punctuation for dictation: "comma", "period", "new line" become the marks themselves.

Words are typed as soon as they are committed, and typed text cannot be taken back, so the
rewriter holds back only what a following word could still change: a word that may begin a
two-word command ("new" of "new line") and a word's own trailing punctuation (Whisper often writes
"Hello, comma," and the spoken comma must replace, not follow, the comma it guessed).
"""

from __future__ import annotations

import re

# Spoken form (lower case, words) -> text it produces.
COMMANDS: dict[tuple[str, ...], str] = {
    ("comma",): ",",
    ("period",): ".",
    ("full", "stop"): ".",
    ("question", "mark"): "?",
    ("exclamation", "mark"): "!",
    ("exclamation", "point"): "!",
    ("colon",): ":",
    ("semicolon",): ";",
    ("new", "line"): "\n",
    ("newline",): "\n",
    ("new", "paragraph"): "\n\n",
}
_PREFIXES = {key[:i] for key in COMMANDS for i in range(1, len(key))}
_MARK = re.compile(r"[.,!?;:…\"']+$")
_SENTENCE_END = (".", "?", "!", "\n")


def _norm(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


class SpokenPunctuation:
    """Streaming rewriter: ``feed`` committed words, get text safe to type now; ``flush`` at the end."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.held: list[str] = []      # words that might begin a command
        self.pending_mark = ""          # trailing punctuation of the last emitted word
        self.capitalize_next = False
        self.at_line_start = True
        self.after_command = False     # the last thing fed was a spoken command

    def feed(self, words: list[str]) -> str:
        """Text to type for these newly committed words (Whisper's leading spaces kept)."""
        if not self.enabled:
            text = "".join(words)
            if self.at_line_start and text.strip():
                text, self.at_line_start = text.lstrip(), False
            return text
        out = []
        for word in words:
            out.append(self._push(word))
        return "".join(out)

    def _push(self, word: str) -> str:
        self.held.append(word)
        key = tuple(_norm(w) for w in self.held)
        if key in COMMANDS:
            self.held = []
            return self._command(COMMANDS[key])
        if key in _PREFIXES:
            return ""
        # Not a command: release the oldest held word, then retry what is left.
        first, rest = self.held[0], self.held[1:]
        self.held = []
        text = self._word(first)
        for w in rest:
            text += self._push(w)
        return text

    def _command(self, mark: str) -> str:
        self.after_command = True
        if mark.startswith("\n"):  # a line break keeps the mark before it ("period new line")
            out, self.pending_mark = self.pending_mark + mark, ""
            self.at_line_start = True
            self.capitalize_next = True
            return out
        self.capitalize_next = mark in _SENTENCE_END
        self.pending_mark = mark  # replaces whatever mark Whisper put on the previous word
        return ""

    def _word(self, word: str) -> str:
        core = _MARK.sub("", word)
        trailing = word[len(core):]
        if not core.strip():  # a bare mark ("," as its own token): treat as trailing punctuation
            if not self.after_command:  # Whisper's mark on a command word: the spoken one decided
                self.pending_mark = trailing.strip()
            return ""
        self.after_command = False
        out = self.pending_mark
        if self.at_line_start:
            core = core.lstrip()
        if self.capitalize_next:
            stripped = core.lstrip()
            core = core[:len(core) - len(stripped)] + stripped[:1].upper() + stripped[1:]
        self.pending_mark = trailing
        self.capitalize_next = False
        self.at_line_start = False
        return out + core

    def flush(self) -> str:
        """End of an utterance: release held words and the last mark."""
        text = ""
        held, self.held = self.held, []
        for w in held:
            text += self._word(w)
        text += self.pending_mark
        self.pending_mark = ""
        return text
