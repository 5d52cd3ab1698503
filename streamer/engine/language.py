"""Language detection: one decoder step after ``<|startoftranscript|>``, batched over windows.

The streaming core decides a stream's language over several windows (one short window's
guess must not flip it), so detection returns the leading candidates with their
probabilities, not only the winner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from streamer.engine.kv_decoder import KVDecoder
from streamer.engine.tokenizer import WhisperTokens
from streamer.hypothesis import DecodeRequest

TOP_CANDIDATES = 5
ENGLISH_ONLY = (("en", 1.0),)


@dataclass(frozen=True)
class LanguageChoice:
    """The language a window is decoded in, and the detector's evidence (empty when none ran)."""

    code: str | None
    probability: float = 1.0
    candidates: tuple[tuple[str, float], ...] = ()


def detect_languages(decoder: KVDecoder, encoder_out: torch.Tensor, tokens: WhisperTokens,
                     top: int = TOP_CANDIDATES, among: Sequence[tuple[str, ...]] = ()
                     ) -> list[tuple[tuple[str, float], ...]]:
    """Each window's ``top`` most likely languages with their probabilities, most likely first.

    Probabilities are a softmax over the language tokens only (as Whisper's ``detect_language``),
    or over a row's ``among`` codes only where it names some (unknown codes are ignored).
    """
    batch, device = encoder_out.shape[0], encoder_out.device
    state = decoder.start(encoder_out)
    state.valid[:, 0] = True
    sot = torch.full((batch, 1), tokens.sot, dtype=torch.long, device=device)
    zero = torch.zeros(batch, 1, dtype=torch.long, device=device)
    hidden = decoder(sot, zero, torch.zeros(1, dtype=torch.long, device=device), state, attend_len=1)
    logits = decoder.logits(hidden[:, -1]).float()
    codes = list(tokens.language_ids)
    ids = torch.tensor([tokens.language_ids[c] for c in codes], device=device)
    scores = logits[:, ids]
    for row, allowed in enumerate(among):
        keep = [i for i, code in enumerate(codes) if code in allowed]
        if keep:
            masked = torch.full_like(scores[row], float("-inf"))
            masked[keep] = scores[row, keep]
            scores[row] = masked
    probs = torch.softmax(scores, dim=-1)
    values, indices = probs.topk(min(top, len(codes)), dim=-1)
    return [tuple((codes[i], round(float(p), 6)) for p, i in zip(row_p, row_i) if p > 0)  # masked: 0
            for row_p, row_i in zip(values.tolist(), indices.tolist())]


def choose_languages(requests: Sequence[DecodeRequest], encoder_out: torch.Tensor, decoder: KVDecoder,
                     tokens: WhisperTokens) -> list[LanguageChoice]:
    """The decode language of each request, detecting (in one batch) where asked or needed.

    A window without a language is decoded in the detected one; ``detect_language`` adds the
    detector's candidates without changing the requested language. English-only models have
    nothing to detect: they report English with certainty whenever evidence was asked for.
    """
    wanted = [i for i, r in enumerate(requests) if not r.language or r.detect_language]
    if not tokens.multilingual:
        asked = set(wanted)
        return [LanguageChoice("en", 1.0, ENGLISH_ONLY if i in asked else ()) for i in range(len(requests))]
    windows = encoder_out if len(wanted) == len(requests) else encoder_out[wanted]  # the same tensor: shared keys
    among = [requests[i].languages for i in wanted]
    found = dict(zip(wanted, detect_languages(decoder, windows, tokens, among=among))) if wanted else {}
    choices = []
    for i, request in enumerate(requests):
        candidates = found.get(i, ())
        if request.language:
            choices.append(LanguageChoice(request.language, 1.0, candidates))
        else:
            choices.append(LanguageChoice(candidates[0][0], candidates[0][1], candidates))
    return choices
