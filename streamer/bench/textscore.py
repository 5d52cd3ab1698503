"""Text measures that word error rate after Whisper's normaliser hides.

The normalised WER (``metrics.wer``) forgives casing, punctuation, broken characters and the
wrong language. The captions a person reads do not, so the text benchmark also counts:

* *cased* error rate: words compared as written (case and attached punctuation count);
* false sentence breaks: a ``.``/``?``/``!`` followed by a word that starts in lower case
  (Whisper ends a window with a period because the window ends there), and sentence marks
  after words the reference has without one (whatever the next word's case);
* replacement characters (U+FFFD: a multi-byte character cut between tokens);
* deletions: reference words missing from the text (speech lost to the VAD or to a cut).

Languages without spaces (ja, zh, th, ...) are scored by characters, non-English ones after
Whisper's basic (language-neutral) normaliser.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache

from streamer.bench.metrics import normalize_text
from streamer.core.casing import ends_sentence

UNSPACED = {"ja", "zh", "th", "lo", "my", "km", "yue", "bo"}
_BREAK = re.compile(r"[.?!。？！]\s+[\"'(¿¡]*(\w)")


@lru_cache(maxsize=1)
def _basic():
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def normalise(text: str, language: str) -> str:
    """Whisper's English normaliser for English, its basic one elsewhere."""
    return normalize_text(text) if language == "en" else _basic()(text)


def _units(text: str, language: str) -> list[str]:
    """Words, or characters where the script puts no spaces between words."""
    return list(text.replace(" ", "")) if language in UNSPACED else text.split()


@dataclass(frozen=True)
class Errors:
    """Edit counts of one hypothesis against one reference, in words (or characters)."""

    reference: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def __add__(self, other: Errors) -> Errors:
        return Errors(self.reference + other.reference, self.substitutions + other.substitutions,
                      self.deletions + other.deletions, self.insertions + other.insertions)


NO_ERRORS = Errors(0, 0, 0, 0)


def errors(reference: list[str], hypothesis: list[str]) -> Errors:
    import jiwer

    if not reference:
        return Errors(0, 0, 0, len(hypothesis))
    if not hypothesis:
        return Errors(len(reference), 0, len(reference), 0)
    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return Errors(len(reference), out.substitutions, out.deletions, out.insertions)


def normalised_errors(reference: str, hypothesis: str, language: str) -> Errors:
    return errors(_units(normalise(reference, language), language), _units(normalise(hypothesis, language), language))


def cased_errors(reference: str, hypothesis: str, language: str) -> Errors:
    """Words as written: a missing period, a wrong capital or a stray break each cost a word."""
    return errors(_units(" ".join(reference.split()), language), _units(" ".join(hypothesis.split()), language))


def false_breaks(text: str) -> int:
    """Sentence marks followed by a word that starts lower case (meaningless for caseless scripts).

    A mark counts where the stream's own casing rule takes it as a sentence end: not the period of
    an abbreviation ("black letter, i.e. the letter"), not an ellipsis.
    """
    return sum(1 for match in _BREAK.finditer(text)
               if match.group(1).islower() and ends_sentence(text[:match.start() + 1]))


def _marked_words(text: str) -> list[tuple[str, bool]]:
    """Each word's comparison key and whether a sentence mark ends it."""
    out = []
    for token in text.split():
        key = "".join(c for c in token.casefold() if c.isalnum())
        if key:
            out.append((key, token.rstrip("\"')»”’")[-1:] in ".?!"))
        elif out and token[:1] in ".?!":
            out[-1] = (out[-1][0], True)  # a mark on its own after a space
    return out


def unreferenced_breaks(reference: str, text: str, language: str) -> int | None:
    """Sentence marks after words the reference has without one, whatever case follows.

    The lower-case count above misses a false break whose next word is capitalised ("muss. Ganz
    neu"); this one compares with the reference, word by word where the two agree on the words.
    None where the reference is unpunctuated or the script has no spaces.
    """
    if language in UNSPACED or not re.search(r"[,.;:?!]", reference):
        return None
    ref = _marked_words(reference)
    hyp = _marked_words(text)
    matcher = difflib.SequenceMatcher(a=[k for k, _ in ref], b=[k for k, _ in hyp], autojunk=False)
    count = 0
    for block in matcher.get_matching_blocks():
        for i in range(block.size):
            if hyp[block.b + i][1] and not ref[block.a + i][1] and block.b + i < len(hyp) - 1:
                count += 1
    return count


def broken_characters(text: str) -> int:
    return text.count("\ufffd")


def rate(total: Errors) -> float | None:
    return None if total.reference == 0 else round(total.errors / total.reference, 4)
