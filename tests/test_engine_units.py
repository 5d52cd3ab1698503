"""The engine's pure pieces on hand-made inputs: DTW path, timestamp rules, segments and words.

No model weights: the tokenizers are the embedded models' real ``tokenizer.json`` files
(tiny.en English-only, base multilingual), so token ids and word splits are Whisper's own.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from streamer.engine.alignment import clamp_to_segments, dtw_path, segment_word_times, segments_of
from streamer.engine.decoding import RowSpec, TimestampRules
from streamer.engine.models import resolve_model
from streamer.engine.tokenizer import WhisperTokens
from streamer.hypothesis import Word


def _tokens(model: str) -> WhisperTokens:
    folder = resolve_model(model)
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    return WhisperTokens.from_file(folder / "tokenizer.json", vocab)


@pytest.fixture(scope="module")
def en() -> WhisperTokens:
    return _tokens("tiny.en")


@pytest.fixture(scope="module")
def multi() -> WhisperTokens:
    return _tokens("base")


# --------------------------------------------------------------------------------- DTW path


def _reference_dtw(cost: np.ndarray) -> tuple[float, list[tuple[int, int]]]:
    """The textbook recurrence cell by cell, backtracked with the same preference order."""
    rows, cols = cost.shape
    acc = np.full((rows + 1, cols + 1), np.inf)
    acc[0, 0] = 0.0
    for i, j in itertools.product(range(1, rows + 1), range(1, cols + 1)):
        acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    path, i, j = [], rows, cols
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        move = int(np.argmin((acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])))
        i, j = (i - 1, j - 1) if move == 0 else (i - 1, j) if move == 1 else (i, j - 1)
    return float(acc[rows, cols]), path[::-1]


def _path(cost: np.ndarray) -> list[tuple[int, int]]:
    tokens, frames = dtw_path(cost)
    return list(zip(tokens.tolist(), frames.tolist()))


def test_dtw_follows_the_only_cheap_path():
    cost = np.array([[-1, -1, 1, 1, 1],
                     [1, -1, 1, 1, 1],
                     [1, 1, -1, -1, -1]], dtype=float)
    assert _path(cost) == [(0, 0), (0, 1), (1, 1), (2, 2), (2, 3), (2, 4)]


def test_dtw_single_token_spans_every_frame_and_single_frame_every_token():
    assert _path(np.zeros((1, 4))) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert _path(np.zeros((3, 1))) == [(0, 0), (1, 0), (2, 0)]


@pytest.mark.parametrize("shape", [(2, 2), (4, 9), (7, 30), (12, 12)])
def test_dtw_vectorised_rows_equal_the_cell_by_cell_recurrence(shape):
    rng = np.random.default_rng(sum(shape))
    cost = rng.normal(size=shape)
    best, expected = _reference_dtw(cost)
    path = _path(cost)
    assert path == expected
    assert sum(cost[i, j] for i, j in path) == pytest.approx(best)
    steps = {(b[0] - a[0], b[1] - a[1]) for a, b in zip(path, path[1:])}
    assert path[0] == (0, 0) and path[-1] == (shape[0] - 1, shape[1] - 1)
    assert steps <= {(1, 1), (1, 0), (0, 1)}


# ---------------------------------------------------------------------------- timestamp rules


@pytest.fixture(scope="module")
def rules(en) -> TimestampRules:
    generation = json.loads((resolve_model("tiny.en") / "generation_config.json").read_text())
    return TimestampRules(en, generation["suppress_tokens"], generation["begin_suppress_tokens"], 51864,
                          torch.device("cpu"))


def _allowed(logits: torch.Tensor) -> set[int]:
    return set(torch.isfinite(logits).nonzero().flatten().tolist())


def _logits(en: WhisperTokens, text: float = 0.0, timestamps: float = 0.0, rows: int = 1) -> torch.Tensor:
    logits = torch.full((rows, 51864), text)
    logits[:, en.timestamp_begin:] = timestamps
    return logits


def test_first_token_is_a_timestamp_within_one_second(en, rules):
    ts = en.timestamp_begin
    logits = _logits(en, text=5.0, timestamps=0.0)
    logits[0, ts + 200] = 50.0  # the model's favourite: 4 s in, too late to start
    out = rules.apply(logits, [[]], [RowSpec([en.sot], 0, 1500)])
    assert _allowed(out[0]) == set(range(ts, ts + 51))


def test_no_timestamp_past_the_end_of_the_audio(en, rules):
    ts = en.timestamp_begin
    short = RowSpec([en.sot], 0, 25)  # a 0.5 s window
    assert _allowed(rules.apply(_logits(en), [[]], [short])[0]) == set(range(ts, ts + 26))
    later = rules.apply(_logits(en, text=0.0, timestamps=-20.0), [[ts, 400]], [short])[0]
    assert max(_allowed(later)) == ts + 25


def test_timestamps_never_decrease_and_segments_have_length(en, rules):
    ts = en.timestamp_begin
    out = rules.apply(_logits(en, text=0.0, timestamps=-20.0), [[ts + 10, 400]], [RowSpec([en.sot], 0, 1500)])
    stamps = {t for t in _allowed(out[0]) if t >= ts}
    assert min(stamps) == ts + 11  # after text: a later timestamp (a segment cannot end where it began)
    assert 400 in _allowed(out[0])  # more text is fine


def test_timestamps_come_in_pairs(en, rules):
    ts = en.timestamp_begin
    row = RowSpec([en.sot], 0, 1500)
    logits = _logits(en, text=0.0, timestamps=-20.0, rows=2)
    out = rules.apply(logits, [[ts + 10, 400, ts + 30], [ts + 10, 400, ts + 30, ts + 30]], [row, row])
    opened = _allowed(out[0])  # text then a timestamp: the next segment's start (>= it) or the end
    assert not {t for t in opened if t < en.eot}
    assert min(t for t in opened if t >= ts) == ts + 30 and en.eot in opened
    closed = _allowed(out[1])  # two timestamps in a row closed a segment: text or the end, no third
    assert not {t for t in closed if t >= ts}
    assert 400 in closed


def test_timestamp_probability_mass_beats_the_best_text_token(en, rules):
    ts = en.timestamp_begin
    row = RowSpec([en.sot], 0, 1500)
    logits = _logits(en, text=-30.0, timestamps=3.0)
    logits[0, 400] = 5.0  # the best text token; all timestamps together weigh 3 + ln(1490) > 5
    forced = _allowed(rules.apply(logits, [[ts, 400]], [row])[0])
    assert not {t for t in forced if t < ts}
    logits = _logits(en, text=-30.0, timestamps=-10.0)
    logits[0, 400] = 5.0
    assert 400 in _allowed(rules.apply(logits, [[ts, 400]], [row])[0])


def _rules_over_the_whole_vocabulary(rules: TimestampRules, logits, generated, rows) -> torch.Tensor:
    """The rules as first written, every mask over all columns: the reference for the sliced version."""
    t, ts, inf = rules.t, rules.t.timestamp_begin, float("inf")
    logits[:, rules.suppress] = -inf
    logits[:, t.no_timestamps] = -inf
    col = torch.arange(logits.shape[-1])[None, :]
    logits.masked_fill_(col > torch.tensor([ts + r.max_timestamp_index for r in rows])[:, None], -inf)
    if not generated[0]:
        logits[:, rules.begin_suppress] = -inf
        logits[:, :ts] = -inf
        logits[:, ts + rules.max_initial + 1:] = -inf
        return logits
    last = torch.tensor([s[-1] for s in generated])[:, None]
    pen = torch.tensor([s[-2] if len(s) > 1 else ts for s in generated])[:, None]
    latest = torch.tensor([next((x for x in reversed(s) if x >= ts), -1) for s in generated])[:, None]
    last_ts, pen_ts = last >= ts, pen >= ts
    logits.masked_fill_(last_ts & pen_ts & (col >= ts), -inf)
    logits.masked_fill_(last_ts & ~pen_ts & (col < t.eot), -inf)
    floor = torch.where(last_ts & ~pen_ts, latest, latest + 1)
    logits.masked_fill_((latest >= 0) & (col >= ts) & (col < floor), -inf)
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    mass, best = torch.logsumexp(logprobs[:, ts:], dim=-1), logprobs[:, :ts].max(dim=-1).values
    logits.masked_fill_((mass > best)[:, None] & (col < ts), -inf)
    return logits


def test_the_sliced_rules_mask_exactly_what_the_whole_vocabulary_rules_mask(en, rules):
    ts, rng = en.timestamp_begin, np.random.default_rng(7)
    for trial in range(200):
        batch = int(rng.integers(1, 5))
        rows = [RowSpec([en.sot], 0, int(rng.integers(0, 1501))) for _ in range(batch)]
        length = 0 if trial % 10 == 0 else int(rng.integers(1, 12))   # first steps too
        generated = [[int(ts + rng.integers(0, 300)) if rng.random() < 0.4 else int(rng.integers(0, en.eot))
                      for _ in range(length)] for _ in rows]
        scale = float(rng.choice([1.0, 5.0, 20.0]))   # flat to peaked: both sides of the timestamp-mass rule
        logits = torch.randn(batch, 51864) * scale
        logits[:, ts:] += float(rng.normal(0, 5))
        expected = _rules_over_the_whole_vocabulary(rules, logits.clone(), generated, rows)
        assert torch.equal(rules.apply(logits.clone(), generated, rows), expected), (trial, generated, rows)


# ------------------------------------------------------------------------ segments and words


def test_segments_of_splits_at_timestamps_and_closes_the_last_at_the_window_end(en):
    ts, eot = en.timestamp_begin, en.eot
    tokens = [ts, 11, 12, ts + 50, ts + 50, 13, ts + 100, ts + 110, 14]
    segments = segments_of(tokens, ts, eot, duration=3.0)
    assert [(round(s, 3), round(e, 3), t) for s, e, t in segments] == [
        (0.0, 1.0, [11, 12]), (1.0, 2.0, [13]), (2.2, 3.0, [14])]
    assert segments_of([ts, ts + 20, eot], ts, eot, 1.0) == []


def test_segment_word_times_share_the_span_by_characters(en):
    ts = en.timestamp_begin
    hello, world = en.encode(" Hello"), en.encode(" world")
    assert len(hello) == len(world) == 1
    probs = [0.9, 0.5]
    words = segment_word_times(segments_of([ts + 50, *hello, *world, ts + 100], ts, en.eot, 5.0), probs, en, "en")
    assert words == [Word(" Hello", 1.0, 1.5, 0.9), Word(" world", 1.5, 2.0, 0.5)]


def test_clamp_to_segments_keeps_words_inside_their_segment(en):
    first, second = en.encode(" Hello world"), en.encode(" good morning")
    segments = [(0.0, 1.0, first), (1.5, 3.0, second)]
    dtw = [Word(" Hello", 0.0, 0.4), Word(" world", 0.4, 1.3), Word(" good", 1.2, 1.8), Word(" morning", 1.8, 3.4)]
    assert clamp_to_segments(dtw, segments, en, "en") == [
        Word(" Hello", 0.0, 0.4), Word(" world", 0.4, 1.0), Word(" good", 1.5, 1.8), Word(" morning", 1.8, 3.0)]
    assert clamp_to_segments(dtw[:3], segments, en, "en") == dtw[:3]  # counts differ: no guessing


def _check_split(tokens: WhisperTokens, text: str, language: str) -> list[str]:
    ids = tokens.encode(text)
    words, groups = tokens.split_words(ids, language)
    assert list(itertools.chain.from_iterable(groups)) == ids
    assert [tokens.decode(g) for g in groups] == words
    assert "".join(words) == text
    return words


def test_split_words_english_keeps_punctuation_with_its_word(en):
    assert _check_split(en, " Hello, world! It's fine.", "en") == [" Hello,", " world!", " It's", " fine."]
    assert _check_split(en, ' "Yes," he said.', "en") == [' "Yes,"', " he", " said."]


def test_split_words_keeps_multi_token_characters_whole(en, multi):
    assert _check_split(en, " café 😀 ok", "en") == [" café", " 😀", " ok"]
    chinese = _check_split(multi, "我们今天去公园", "zh")  # 园 is two byte-level tokens
    assert chinese == ["我们", "今天", "去", "公", "园"]
    assert _check_split(multi, "鑫龘", "zh") == ["鑫", "龘"]  # three and two tokens
    assert _check_split(multi, "a\ufffdb", "zh") == ["a", "\ufffd", "b"]  # a real U+FFFD is a character



TEXTS = {
    "ja": "客観的実在の知識は、真っ昼間なのにキャンプの外れの電柱に電球がともっていた。",
    "zh": "他搬起石头砸了自己的脚，公园里的人都笑了。",
    "ko": "그는 1위를 차지했고 모두가 축하했습니다.",
    "th": "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "emoji": " I love it 😀🎉 so much 👍🏽!",
    "accents": " Señor Müller déjà vu: naïve façade, Ærø, ŝtono.",
}


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_words_never_hold_a_partial_character_wherever_the_tokens_stop(multi, name):
    """A window may end on any token; byte-level BPE splits many characters over two or three
    tokens. Every cut must give whole characters only: a prefix of the text, no U+FFFD."""
    text = TEXTS[name]
    tokens = multi.encode(text)
    assert len(tokens) > len(text.split())  # multi-token characters are really exercised
    language = name if name in ("ja", "zh", "ko", "th") else "en"
    for cut in range(1, len(tokens) + 1):
        words, groups = multi.split_words(tokens[:cut], language)
        joined = "".join(words)
        assert "\ufffd" not in joined, (cut, words)
        assert text.startswith(joined), (cut, joined)
        assert sum(len(g) for g in groups) <= cut
    assert "".join(multi.split_words(tokens, language)[0]) == text
