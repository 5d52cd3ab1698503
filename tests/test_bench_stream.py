"""``streamer bench stream``: several runs give one median row per model and file."""

from __future__ import annotations

import json
from dataclasses import replace

from streamer.bench.stream import FileResult, format_table, machine, median_result
from streamer.cli import main


def _result(run: int, wer: float, p90: float, pause_words: int) -> FileResult:
    return FileResult(model="tiny.en", file="ljspeech_x_with_10s_silence_and_10s_noise.wav", audio_seconds=89.2,
                      wall_seconds=90.0 + run, wer=wer, offline_wer=0.02, cased_wer=wer + 0.1,
                      offline_cased_wer=0.1, false_breaks=run, offline_false_breaks=0, sentences=10, missing_sentences=0,
                      latency_p50=0.5, latency_p90=p90, latency_max=None, latency_p90_first_quarter=1.0,
                      latency_p90_last_quarter=1.0, mark_latency_p90=2.0, pause_words=pause_words, decodes=70 + run, decode_p50=0.3,
                      decode_p95=0.4, max_window_seconds=7.0, max_lag_seconds=0.5, text=f"run {run}",
                      offline_text="offline", run=run)


def test_median_row_takes_each_metric_separately() -> None:
    runs = [_result(1, 0.05, 2.0, 0), _result(2, 0.01, 1.0, 1), _result(3, 0.03, 3.0, 0)]
    median = median_result(runs)
    assert median.run == 0
    assert (median.wer, median.latency_p90, median.pause_words, median.decodes) == (0.03, 2.0, 0, 72)
    assert median.latency_max is None and median.offline_wer == 0.02
    even = median_result(runs[:2])
    assert even.wer == 0.03 and even.pause_words == 0.5
    table = format_table([*runs, median, replace(even, model="base")], [], machine(), "real time")
    rows = table.splitlines()[2:]
    assert [row.split()[2] for row in rows] == ["1", "2", "3", "med", "med"]
    assert "0.5" in rows[-1].split()  # a median count that falls between two runs is printed as such


def test_bench_stream_runs_twice_and_reports_the_median(shared_data, tmp_path) -> None:
    out = tmp_path / "stream.json"
    code = main(["bench", "stream", "--models", "tiny.en", "--files",
                 "ljspeech_LJ001-0001_to_0010_with_10s_silence_and_10s_noise.wav", "--limit", "12", "--fast",
                 "--runs", "2", "--no-nonspeech", "--data", str(shared_data), "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())["files"]
    assert [r["run"] for r in rows] == [1, 2, 0]
    runs, median = rows[:2], rows[2]
    assert runs[0]["offline_wer"] == runs[1]["offline_wer"] == median["offline_wer"]
    assert all(r["wer"] < 0.3 and r["sentences"] >= 1 and r["missing_sentences"] == 0 for r in runs)
    assert min(r["wer"] for r in runs) <= median["wer"] <= max(r["wer"] for r in runs)
    assert all(r["cased_wer"] is not None and r["offline_cased_wer"] is not None for r in rows)
    assert all(isinstance(r["false_breaks"], int) for r in runs)
    # each run keeps every sentence's latency with its place in the audio (to find a rare slow one)
    for r in runs:
        assert len(r["sentence_latencies"]) == r["sentences"]
        assert all(lat is not None for _, lat in r["sentence_latencies"])  # fast replay: wall time runs ahead
        assert [end for end, _ in r["sentence_latencies"]] == sorted(end for end, _ in r["sentence_latencies"])
    assert median["sentence_latencies"] == []
