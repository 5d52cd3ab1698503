"""Whisper's special tokens and text<->token conversion, derived from the tokenizer itself.

English-only and multilingual checkpoints number their special tokens differently, and
large-v3 adds a language, so nothing here is hard-coded: every id is looked up by name.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer

from streamer.hypothesis import MAX_PROMPT_TOKENS, EngineError

# Languages written without spaces between words: split words on unicode points instead.
NO_SPACE_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}


@dataclass
class WhisperTokens:
    tokenizer: Tokenizer
    eot: int
    sot: int
    sot_prev: int
    no_speech: int
    no_timestamps: int
    timestamp_begin: int
    transcribe: int
    translate: int
    language_ids: dict[str, int] = field(default_factory=dict)
    multilingual: bool = True

    @classmethod
    def from_file(cls, path: str | Path, vocab_size: int) -> "WhisperTokens":
        """From a ``tokenizer.json``; the model's vocabulary size tells English-only (51864) from multilingual."""
        return cls.from_tokenizer(Tokenizer.from_file(str(path)), multilingual=vocab_size >= 51865, source=str(path))

    @classmethod
    def from_tokenizer(cls, tok: Tokenizer, multilingual: bool, source: str = "the tokenizer") -> "WhisperTokens":
        ids = lambda name: tok.token_to_id(name)  # noqa: E731
        sot, translate = ids("<|startoftranscript|>"), ids("<|translate|>")
        no_ts = ids("<|notimestamps|>")
        if None in (sot, translate, no_ts, ids("<|endoftext|>")):
            raise EngineError(f"{source} is not a Whisper tokenizer (special tokens missing)")
        languages = {}
        for i in range(sot + 1, translate):
            name = tok.id_to_token(i)
            if name and name.startswith("<|") and name.endswith("|>"):
                languages[name[2:-2]] = i
        ts0 = ids("<|0.00|>")
        return cls(
            tokenizer=tok, eot=ids("<|endoftext|>"), sot=sot, sot_prev=ids("<|startofprev|>"),
            no_speech=ids("<|nospeech|>") or ids("<|nocaptions|>"), no_timestamps=no_ts,
            timestamp_begin=ts0 if ts0 is not None else no_ts + 1,
            transcribe=ids("<|transcribe|>"), translate=translate, language_ids=languages,
            multilingual=multilingual,
        )

    def sot_sequence(self, language: str | None, task: str) -> list[int]:
        """``<|startoftranscript|>`` [language, task]: English-only models take no language/task."""
        if not self.multilingual:
            return [self.sot]
        if language not in self.language_ids:
            raise EngineError(f"unknown language {language!r}; known: {', '.join(sorted(self.language_ids))}")
        return [self.sot, self.language_ids[language], self.translate if task == "translate" else self.transcribe]

    @property
    def languages(self) -> tuple[str, ...]:
        """What the model transcribes: English-only checkpoints keep language tokens they never learned."""
        return tuple(self.language_ids) if self.multilingual else ("en",)

    def prompt_prefix(self, prompt: str, vocabulary: str = "") -> list[int]:
        """``<|startofprev|>`` context: the vocabulary whole and first, then the rolling prompt's last tokens.

        The vocabulary (names and terms a user wants spelled right) is never trimmed; the rolling
        prompt fills what is left of Whisper's budget, trimmed from its left (its oldest words).
        Nothing at all for an empty prompt and vocabulary.
        """
        fixed = self.encode(" " + vocabulary.strip()) if vocabulary.strip() else []
        if len(fixed) > MAX_PROMPT_TOKENS:
            raise EngineError(f"the vocabulary prompt is {len(fixed)} tokens; Whisper takes at most "
                              f"{MAX_PROMPT_TOKENS} prompt tokens (shorten it)")
        room = MAX_PROMPT_TOKENS - len(fixed)
        rolling = self.encode(" " + prompt.strip())[-room:] if prompt.strip() and room else []
        return [self.sot_prev, *fixed, *rolling] if fixed or rolling else []

    def prompt_tokens(self, text: str) -> int:
        """How many prompt tokens ``text`` takes (as :meth:`prompt_prefix` encodes it)."""
        return len(self.encode(" " + text.strip())) if text.strip() else 0

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i < self.eot], skip_special_tokens=False)

    def split_words(self, tokens: list[int], language: str | None) -> tuple[list[str], list[list[int]]]:
        """Group text tokens into words (a leading space or punctuation starts a new one)."""
        if language in NO_SPACE_LANGUAGES:
            return self._split_unicode(tokens)
        subwords, subword_tokens = self._split_unicode(tokens)
        words: list[str] = []
        word_tokens: list[list[int]] = []
        for sub, sub_tokens in zip(subwords, subword_tokens):
            special = sub_tokens[0] >= self.eot
            starts_word = sub.startswith(" ") or special or not words
            punctuation_only = sub.strip() != "" and all(c in string.punctuation for c in sub.strip())
            if starts_word and not (punctuation_only and words and not sub.startswith(" ")):
                words.append(sub)
                word_tokens.append(list(sub_tokens))
            else:
                words[-1] += sub
                word_tokens[-1].extend(sub_tokens)
        return words, word_tokens

    def _split_unicode(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """Split where the tokens' bytes form whole UTF-8 characters (multi-token characters stay together).

        Byte-level BPE cuts many characters (CJK, Thai, emoji, some accents) over two or three
        tokens. A group closes only when its bytes decode completely; a sequence that ends inside
        a character (a window's last token) leaves that partial character out, and bytes that are
        not UTF-8 at all are dropped, so no word ever holds U+FFFD or half a character.
        """
        words, word_tokens, current, pending = [], [], [], b""
        for token in tokens:
            current.append(token)
            if token >= self.eot:  # special tokens are whole by definition
                words.append(self.tokenizer.decode(current, skip_special_tokens=False))
                word_tokens.append(current)
                current, pending = [], b""
                continue
            pending += self.token_bytes(token)
            try:
                text = pending.decode("utf-8")
            except UnicodeDecodeError as exc:
                if exc.reason == "unexpected end of data":
                    continue  # the character goes on in the next token
                text = pending.decode("utf-8", errors="ignore")
            words.append(text)
            word_tokens.append(current)
            current, pending = [], b""
        return words, word_tokens

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes a text token stands for (GPT-2 byte-level BPE maps each byte to a character)."""
        return bytes(_BYTE_OF.get(ch, 0) for ch in self.tokenizer.id_to_token(token) or "")


def _byte_decoder() -> dict[str, int]:
    """GPT-2's reversible byte <-> printable character table, inverted (character -> byte)."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


_BYTE_OF = _byte_decoder()
