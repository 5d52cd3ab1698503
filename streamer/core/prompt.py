"""The text prompt for each decode: the tail of committed text, bounded.

Conditioning on what was already said keeps spelling, casing and punctuation consistent
across buffer trims. After a suspect hypothesis the prompt restarts from later commits only,
because a hallucination fed back as context tends to repeat itself.
"""

from __future__ import annotations

from typing import Sequence

from streamer.hypothesis import Word

PROMPT_TOLERANCE = 0.05  # s: a committed word ending this close after the window start is still "before" it


class PromptBuilder:
    """Builds the prompt from committed words, forgetting everything before the last reset."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._from_index = 0
        self.earlier = ""  # text committed before this stream core existed (a resumed stream's tail)
        self.earlier_until = 0.0  # where that text's audio ends (a resumed stream's floor)

    def reset(self, committed_count: int) -> None:
        """Use only words committed from now on (index ``committed_count`` onwards)."""
        self._from_index = committed_count
        self.earlier = ""

    def build(self, committed: Sequence[Word], before: float = float("inf")) -> str:
        """The last ``max_chars`` characters of usable committed text ending by ``before``, from a word start.

        Only words *before* the decode window belong in the prompt: words whose audio is in
        the window are decoded again, and a prompt that already contains them makes Whisper
        skip or garble that audio.
        """
        if self.max_chars <= 0:
            return ""
        picked: list[str] = []
        size = 0
        for i in range(len(committed) - 1, self._from_index - 1, -1):
            word = committed[i]
            if word.end > before + PROMPT_TOLERANCE:
                continue
            size += len(word.word)
            if size > self.max_chars:
                break
            picked.append(word.word)
        else:
            earlier_fits = before + PROMPT_TOLERANCE >= self.earlier_until  # not over a resumed stream's context audio
            if self._from_index == 0 and self.earlier and earlier_fits and size < self.max_chars:
                room = self.max_chars - size
                cut = self.earlier[-room:]
                picked.append(cut[cut.find(" "):] if len(self.earlier) > room and " " in cut else cut)
        text = "".join(reversed(picked)).strip()
        # Marks alone are no context (a reset prompt that got only the held period decided after
        # it): Whisper may loop on a prompt's punctuation (tiny.en, ". Ask, not": ". . . . . .").
        return text if any(ch.isalnum() for ch in text) else ""
