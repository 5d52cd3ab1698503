"""Word timestamps from cross-attention: dynamic time warping over Whisper's alignment heads.

Whisper's timestamp tokens only bound segments; the alignment heads of the decoder's
cross-attention track which 20 ms audio frame each text token attends to. Aligning the token
sequence to the frames with DTW gives per-token times, grouped into words.
"""

from __future__ import annotations

import numpy as np
import torch

from streamer.engine.kv_decoder import KVDecoder
from streamer.engine.tokenizer import WhisperTokens
from streamer.hypothesis import Word

FRAMES_PER_SECOND = 50  # encoder output frames (20 ms each)
MEDIAN_WIDTH = 7


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic alignment path minimising ``cost`` [tokens, frames].

    Each row is filled with a cumulative-minimum identity instead of a Python loop over
    cells: ``D[i, j] = x[i, j] + min(D[i-1, j-1], D[i-1, j], D[i, j-1])`` unrolls along ``j``
    into ``S[j] + min_{k<=j}(a[k] - S[k-1])`` with ``S`` the row's prefix sum.
    """
    rows, cols = cost.shape
    acc = np.full((rows + 1, cols + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, rows + 1):
        above = np.minimum(acc[i - 1, :-1], acc[i - 1, 1:])  # min(D[i-1, j-1], D[i-1, j]) for j = 1..cols
        prefix = np.concatenate(([0.0], np.cumsum(cost[i - 1])))
        acc[i, 1:] = prefix[1:] + np.minimum.accumulate(above - prefix[:-1])
    i, j = rows, cols
    token_idx, frame_idx = [], []
    while i > 0 and j > 0:
        token_idx.append(i - 1)
        frame_idx.append(j - 1)
        options = (acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
        move = int(np.argmin(options))
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    return np.array(token_idx[::-1]), np.array(frame_idx[::-1])


def _median_filter(x: np.ndarray, width: int) -> np.ndarray:
    pad = width // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.median(windows, axis=-1)


def teacher_forced(decoder: KVDecoder, encoder_out: torch.Tensor, sequences: list[list[int]],
                   heads: list[tuple[int, int]], eot: int) -> tuple[list[np.ndarray], torch.Tensor]:
    """One decoder pass over known ``sequences``.

    Returns the alignment heads' cross-attention ([heads, tokens, frames] per sequence) and
    the final hidden states (for token probabilities), so both come from a single pass.
    """
    device = encoder_out.device
    width = max(len(s) for s in sequences)
    batch = torch.full((len(sequences), width), eot, dtype=torch.long, device=device)
    for b, seq in enumerate(sequences):
        batch[b, :len(seq)] = torch.tensor(seq, device=device)
    state = decoder.start(encoder_out)
    state.valid[:, :width] = True  # right padding never influences earlier (causal) positions
    positions = torch.arange(width, device=device).expand(len(sequences), width)
    queries: dict[int, torch.Tensor] = {}
    hidden = decoder(batch, positions, torch.arange(width, device=device), state, attend_len=width,
                     cross_queries=queries)
    per_head = []
    for layer, head in heads:
        q = queries[layer][:, head].float()  # [batch, tokens, head_dim]
        k = state.cross_k[layer][:, head].float()  # [batch, frames, head_dim]
        per_head.append(torch.softmax(q @ k.transpose(1, 2) * q.shape[-1] ** -0.5, dim=-1))
    stacked = torch.stack(per_head, dim=1).cpu().numpy()  # [batch, heads, tokens, frames]
    return [stacked[b, :, :len(seq)] for b, seq in enumerate(sequences)], hidden


def word_times(weights: np.ndarray, prefix_len: int, text_tokens: list[int], token_probs: list[float],
               duration: float, tokens: WhisperTokens, language: str | None) -> list[Word]:
    """Words with start/end seconds (window-relative) from one window's alignment weights.

    ``weights`` rows cover ``prefix + text_tokens + [eot]``; row ``prefix_len - 1`` predicts
    the first text token.
    """
    if not text_tokens:
        return []
    frames = max(1, min(weights.shape[-1], int(round(duration * FRAMES_PER_SECOND))))
    w = weights[:, prefix_len - 1: prefix_len + len(text_tokens), :frames]
    std, mean = w.std(axis=-2, keepdims=True), w.mean(axis=-2, keepdims=True)
    w = _median_filter((w - mean) / (std + 1e-8), MEDIAN_WIDTH)
    token_idx, frame_idx = dtw_path(-w.mean(axis=0))
    jumps = np.concatenate(([True], np.diff(token_idx) > 0))
    jump_times = frame_idx[jumps] / FRAMES_PER_SECOND  # start time of each row (text tokens + eot)
    words, word_tokens = tokens.split_words(text_tokens, language)
    bounds = np.concatenate(([0], np.cumsum([len(t) for t in word_tokens])))
    result, k = [], 0
    for word, toks, start_i, end_i in zip(words, word_tokens, bounds[:-1], bounds[1:]):
        start = float(jump_times[min(start_i, len(jump_times) - 1)])
        end = float(jump_times[min(end_i, len(jump_times) - 1)])
        probability = float(np.mean(token_probs[k:k + len(toks)])) if token_probs else 1.0
        k += len(toks)
        if word.strip():
            result.append(Word(word, round(start, 3), round(max(end, start), 3), probability))
    return _clamp_long_words(result, duration)


def _clamp_long_words(words: list[Word], duration: float) -> list[Word]:
    """DTW sometimes stretches a word over a following pause; cap durations at 3x the median."""
    durations = [w.end - w.start for w in words if w.end > w.start]
    if not durations:
        return words
    cap = max(3 * float(np.median(durations)), 0.7)
    out = []
    for w in words:
        start, end = w.start, min(w.end, duration)
        if end - start > cap:
            start = max(start, end - cap) if w is words[0] else start
            end = min(end, start + cap)
        out.append(Word(w.word, round(start, 3), round(max(end, start), 3), w.probability))
    return out


def segments_of(tokens: list[int], timestamp_begin: int, eot: int, duration: float) -> list[tuple[float, float, list[int]]]:
    """Split a timestamped token stream into (start, end, text tokens) segments.

    A trailing segment that Whisper never closed ends at the window's end.
    """
    segments, start, text = [], 0.0, []
    for token in tokens:
        if token >= timestamp_begin:
            time = (token - timestamp_begin) * 0.02
            if text:
                segments.append((start, time, text))
                text = []
            start = time
        elif token < eot:
            text.append(token)
    if text:
        segments.append((start, max(duration, start), text))
    return segments


def segment_word_times(segments: list[tuple[float, float, list[int]]], token_probs: list[float],
                       tokens: WhisperTokens, language: str | None) -> list[Word]:
    """Words timed only by timestamp tokens: each segment's span shared out by character count."""
    result, k = [], 0
    for start, end, text in segments:
        words, word_tokens = tokens.split_words(text, language)
        total = sum(len(w.strip()) or 1 for w in words) or 1
        cursor = start
        for word, toks in zip(words, word_tokens):
            span = (end - start) * (len(word.strip()) or 1) / total
            probability = float(np.mean(token_probs[k:k + len(toks)])) if token_probs[k:k + len(toks)] else 1.0
            k += len(toks)
            if word.strip():
                result.append(Word(word, round(cursor, 3), round(cursor + span, 3), probability))
            cursor += span
    return result


def clamp_to_segments(words: list[Word], segments: list[tuple[float, float, list[int]]], tokens: WhisperTokens,
                      language: str | None) -> list[Word]:
    """DTW word times kept inside the bounds of the timestamp segment each word belongs to."""
    bounds = []
    for start, end, text in segments:
        names, _ = tokens.split_words(text, language)
        bounds += [(start, end)] * sum(1 for n in names if n.strip())
    if len(bounds) != len(words):
        return words
    out = []
    for w, (start, end) in zip(words, bounds):
        s = min(max(w.start, start), end)
        e = min(max(w.end, s), end)
        out.append(Word(w.word, round(s, 3), round(e, 3), w.probability))
    return out
