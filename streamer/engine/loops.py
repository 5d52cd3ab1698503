"""Stop decoding a row that loops: Whisper's greedy loops otherwise run to the token limit.

Once greedy decoding repeats a phrase it rarely stops: "by a similar process produced by a
similar process produced ..." runs to ``max_new_tokens`` (128), and the caller's compression-
ratio guard then rejects the whole hypothesis. On a CPU those tokens cost seconds (3.2 s for a
batch of three rows in the daemon, every row waiting on the longest). A row is stopped as soon
as the rejection is certain enough: its text tokens end in at least three repetitions of a
period of up to ``MAX_PERIOD`` tokens, *and* its text so far already compresses past the
caller's threshold. Going on could only repeat more (the ratio grows) or, rarely, break out
with new words; so the hypothesis is rejected as the full decode would have been, for a
fraction of the tokens.

The check depends on a row's tokens so far and nothing else, so plain greedy, draft
verification and the compiled path stop every row at the same token.
"""

from __future__ import annotations

from streamer.hypothesis import compression_ratio

MAX_PERIOD = 48   # tokens in one repetition of the looping phrase (a clause of a dozen words)
MIN_REPEATS = 3   # repetitions at the end of the text before the ratio is even computed


def ends_periodic(seq: list[int], max_period: int = MAX_PERIOD, repeats: int = MIN_REPEATS) -> bool:
    """Whether ``seq`` ends in ``repeats`` back-to-back copies of one block of at most ``max_period``."""
    n = len(seq)
    for period in range(1, min(max_period, n // repeats) + 1):
        if seq[-1] != seq[-1 - period]:
            continue  # the cheap test that rules out most periods
        tail = seq[n - repeats * period:]
        if tail[period:] == tail[:-period]:
            return True
    return False


def looping(generated: list[int], stop_ratio: float | None, eot: int, decode) -> bool:
    """Whether a row whose tokens are ``generated`` should stop: it loops and will be rejected.

    ``decode`` turns text token ids into text (the tokenizer's); ``eot`` is the first
    non-text token id; ``stop_ratio`` None never stops (Whisper's own behaviour).
    """
    if stop_ratio is None or not generated or generated[-1] >= eot:
        return False  # a timestamp token adds no text: the verdict cannot have changed
    text = [t for t in generated if t < eot]
    return ends_periodic(text) and compression_ratio(decode(text)) > stop_ratio
