"""`streamer bench load` machinery, smoke-sized: two scripted-engine clients at 10x real time."""

from __future__ import annotations

import numpy as np
import pytest

from support import scaled, timeline
from support.ws import settings
from streamer.bench.load import format_table, run_level
from streamer.engine.scripted import ScriptedEngine, timeline_script

pytestmark = pytest.mark.timeout(scaled(60))


async def test_load_level_reports_latency_lag_and_batches():
    words = timeline(6)  # one every 0.6 s for 4 s
    segments = [{"start": 0.0, "end": 1.9, "text": " ".join(w.word for w in words[:3])},
                {"start": 1.9, "end": 3.9, "text": " ".join(w.word for w in words[3:])}]
    audio = np.zeros(4 * 16000, dtype=np.float32)
    result = await run_level(settings(), ScriptedEngine(timeline_script(words)), audio, segments, 2, speed=10.0)
    assert result.clients == 2 and result.errors == []
    assert result.completed == 4 and result.latency_p90 is not None and result.latency_p90 < 1.0
    assert result.batches > 0 and 1 <= result.batch_max <= 2
    assert result.holds_real_time
    table = format_table([result], "scripted")
    assert "model scripted" in table and table.splitlines()[-1].strip().startswith("2")


async def test_clients_arriving_one_by_one_past_the_limit_are_counted_as_refused():
    words = timeline(6)
    segments = [{"start": 0.0, "end": 3.9, "text": " ".join(w.word for w in words)}]
    audio = np.zeros(4 * 16000, dtype=np.float32)
    one_stream = settings(**{"server.max_sessions": 1, "server.admission": "fixed"})
    result = await run_level(one_stream, ScriptedEngine(timeline_script(words)), audio, segments, 3, speed=10.0,
                             arrive_every=0.05)
    assert result.refused == 2 and result.errors == []          # turned away with server_busy: not failures
    assert result.sentences == 1 and result.completed == 1       # the admitted stream is scored alone
    assert format_table([result], "scripted").splitlines()[-1].split()[-1] == "2"
