"""One typed configuration, loaded from ``configs/*.toml``, then environment, then CLI flags.

Precedence (later wins): built-in defaults < TOML file < ``STREAMER_<SECTION>__<KEY>``
environment variables < command-line flags. Every value is validated at start-up so a
typo fails with a message naming the key, not deep inside the daemon.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamer.resources import config_dir


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EngineConfig(_Section):
    """Which Whisper and how to run it."""

    backend: str = Field("whisper", description="engine implementation: whisper (transformers, this project's "
                         "decoder) or faster-whisper (CTranslate2; pip install 'streamer[bench]')")
    model: str = Field("base", description="embedded name (base, tiny.en), hub id or local folder")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    quantize: Literal["auto", "none", "int8"] = Field(
        "auto", description="CPU only: dynamic int8 linear layers (auto = int8 on CPU)")
    encoder_dtype: Literal["auto", "model", "bfloat16", "float32"] = Field(
        "auto", description="CPU: the encoder's float type. auto = bfloat16 instead of int8 where the CPU multiplies "
        "bfloat16 natively (AMX tiles or AVX-512 BF16: text much nearer float32's, docs/engine.md), else as model; "
        "model = the engine's own (int8 layers); bfloat16 = always (3-8x slower where emulated); float32 = "
        "unquantised encoder beside the int8 decoder (near bfloat16's text where bfloat16 is emulated; ~0.2 s per "
        "update)")
    cross_attention_dtype: Literal["auto", "model", "bfloat16"] = Field(
        "auto", description="CPU: the float type of the decoder's cross-attention keys/values (the bytes each "
        "decoder step reads most). auto = bfloat16 where the encoder runs in bfloat16 on AMX tiles (faster "
        "there, slower without them; docs/engine.md), else as model")
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = all cores")
    compile: bool = Field(True, description="CUDA only: static KV cache + torch.compile")
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 2, 4, 8],
                                   description="batch shapes warmed up (CUDA compile)")
    max_new_tokens: int = Field(128, ge=8, le=440)
    beam_size: int = Field(1, ge=1, le=10, description="1 = greedy; more = beam search, batched across beams and "
                           "sessions (CPU path; measured in the README: 'Beam search')")
    drafts: bool = Field(False, description="verify the stream's previous tokens in blocks instead of decoding "
                         "them one by one (CPU; and CUDA, where each block width is one more captured graph). "
                         "CPU int8 then quantises the decoder per token. Off: not exact nor faster in int8 yet, "
                         "not measured on a GPU yet (docs/engine.md)")
    encoder_buckets: list[float] = Field(default_factory=list, description="CPU, windows in a fixed language only: "
                                         "run the encoder on the window rounded up to one of these lengths (s) instead "
                                         "of 30 s, e.g. [10, 15, 20]: a decode costs 0.44x, read speech as good, "
                                         "spontaneous speech 4 WER points worse (docs/engine.md); [] = off")
    word_timestamps: Literal["dtw", "segments", "both"] = Field(
        "both", description="word times from cross-attention DTW, timestamp tokens, or DTW clamped to segments")
    fused_alignment: bool = Field(False, description="word times and probabilities from the greedy loop's "
                                  "own cross-attention instead of a second decoder pass (eager path; docs/engine.md)")
    cache_dir: str | None = Field(None, description="where embedded models are converted; default XDG cache")
    warmup: bool = True

    @field_validator("encoder_buckets")
    @classmethod
    def _buckets_within_whisper(cls, value: list[float]) -> list[float]:
        return _valid_buckets("engine", value)


class StreamConfig(_Section):
    """The streaming policy: when to decode, what to commit, how big the buffer may grow."""

    language: str | None = Field(None, description="a code (\"en\"), the expected languages to detect among "
                                 "(\"en,de\"), or None to detect any (docs/streaming.md)")
    task: Literal["transcribe", "translate"] = "transcribe"
    min_chunk: float = Field(1.0, gt=0, le=10, description="seconds of new audio before a re-decode")
    agreement_n: int = Field(2, ge=1, le=5, description="LocalAgreement-n")
    max_buffer: float = Field(20.0, gt=2, le=29.0, description="hard cap on the decode window, seconds")
    trim_to: float = Field(12.0, gt=0, description="past this much audio, trim at a committed word (keeping ~half); "
                           "12 rather than 6: Whisper hears better with more context (bench text base: multilingual "
                           "-3.1, long-form -0.9 WER points), at 0.26 s more latency p90 and about a quarter more "
                           "decode time per round of 3 base streams (docs/streaming.md)")
    min_agreement_window: float = Field(1.5, ge=0, le=10, description="an update of a window shorter than this "
                                        "(s) is shown as tentative but does not vote in the agreement; 0 = off")
    carry_context: float = Field(0.0, ge=0, le=10, description="seconds of an utterance's last committed words "
                                 "decoded again at the start of the next one, until it has 2.5 s of its own (audio "
                                 "context for short utterances across pauses); 0 = off (docs/streaming.md)")
    commit_beam_size: int = Field(0, ge=0, le=10, description="beam for the decodes that commit on their own (pause, "
                                  "final, forced), where greedy's near-ties become text; 0 = engine.beam_size "
                                  "(docs/streaming.md)")
    pause_commit: float = Field(0.2, ge=0, le=2, description="VAD pause (s) that commits the words before it; 0 = off")
    preempt_updates: bool = Field(True, description="an update still decoding when a pause or final decode of its "
                                  "utterance comes due is given up (the engine stops it between steps): that decode "
                                  "commits every word the update could have, one decode sooner (docs/streaming.md)")
    end_silence: float = Field(0.5, ge=0.1, le=5, description="VAD silence that closes an utterance, s")
    long_silence: float = Field(2.0, ge=0.1, le=60, description="silence after which a word's held trailing "
                                "punctuation commits as Whisper wrote it, s")
    speech_pad: float = Field(0.2, ge=0, le=1, description="audio kept around speech, s")
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    vad_highpass: float = Field(100.0, ge=0, le=400, description="high-pass (Hz) on what the VAD hears; 0 = off")
    vad_gain: bool = Field(False, description="slow automatic gain (up to +30 dB) on what the VAD hears (no effect "
                           "measured on silero for quiet speech, so off)")
    use_vad: bool = True
    prompt_chars: int = Field(200, ge=0, le=800, description="tail of committed text used as prompt")
    no_speech_threshold: float = Field(0.6, ge=0, le=1)
    logprob_threshold: float = Field(-1.0, le=0)
    compression_ratio_threshold: float = Field(2.4, gt=1)

    @model_validator(mode="after")
    def _trim_below_cap(self) -> "StreamConfig":
        if self.trim_to >= self.max_buffer:
            raise ValueError(f"stream.trim_to ({self.trim_to}) must be below stream.max_buffer ({self.max_buffer})")
        return self


def _valid_buckets(section: str, value: list[float]) -> list[float]:
    if any(not 1.0 <= b <= 30.0 for b in value):
        raise ValueError(f"{section}.encoder_buckets must lie between 1 and 30 s, got {value}")
    return sorted(value)


class ServerConfig(_Section):
    """The websocket daemon."""

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    token: str | None = Field(None, description="bearer token required by clients (or STREAMER_TOKEN)")
    allowed_origins: list[str] = Field(default_factory=list, description="browser Origin allow-list; empty = any")
    certfile: str | None = None
    keyfile: str | None = None
    max_sessions: int = Field(16, ge=1, description="hard cap on live sessions, whatever the capacity")
    admission: Literal["capacity", "fixed"] = Field(
        "capacity", description="capacity: admit while the measured engine load allows one more real-time stream")
    target_utilisation: float = Field(0.85, gt=0, le=2, description="admit while one more stream keeps a pass over "
                                      "every live stream within this fraction of stream.min_chunk of engine time")
    latency_budget: float = Field(2.5, gt=0, description="s: no admission while a live stream lags more than this")
    max_frame_bytes: int = Field(1 << 20, ge=1024)
    idle_timeout: float = Field(60.0, gt=0, description="seconds without audio before a session is closed")
    max_pending_audio: float = Field(30.0, gt=1, description="undecoded seconds before reading pauses")
    send_queue: int = Field(256, ge=1, description="events buffered for a slow reader before it is dropped")
    max_batch: int = Field(8, ge=1)
    beam_streams: int = Field(1, ge=0, description="engine.beam_size and stream.commit_beam_size apply while at "
                              "most this many sessions are live; with more, every window is decoded greedily (a "
                              "beam costs the decoder time more streams need); 0 = beams whatever the load")
    bucket_streams: int = Field(1, ge=0, description="with more than this many sessions live, every window in a "
                                "fixed language runs the encoder cut to server.encoder_buckets: decode rounds at "
                                "half the cost, but more loops and worse spontaneous speech (docs/daemon.md); "
                                "0 = cut whatever the load")
    encoder_buckets: list[float] = Field(default_factory=list, description="encoder lengths (s) for "
                                         "server.bucket_streams, e.g. [10, 15, 20]; [] (default) = the full encoder "
                                         "under any load (CPU path only: a compiled CUDA decoder keeps 30 s)")
    resume_secret: str | None = Field(None, description="signs resume tokens; give every replica the same one "
                                      "(default: random per process, so only this process can resume)")
    resume_ttl: float = Field(600.0, gt=0, description="seconds a resume token stays valid after it was issued")
    max_resume_audio: float = Field(30.0, gt=0, description="seconds of retained audio a resume may replay")
    drain_grace: float = Field(10.0, ge=0, description="on SIGTERM, seconds finishing sessions get before the "
                               "daemon exits (live streams are told to resume elsewhere after drain_notice)")
    bus: str | None = Field(None, description="redis://HOST:PORT/DB: share transcript events between replicas, so "
                            "/v1/captions subscribers follow a stream another daemon serves (needs the 'bus' extra)")
    drain_notice: float = Field(0.0, ge=0, description="on SIGTERM, seconds /healthz answers 'draining' (and new "
                                "sessions are refused) before live streams are moved, so a load balancer's health "
                                "check sees it; 0 moves them at once")
    wyoming: str = Field("", description="also serve the Wyoming protocol (Home Assistant) at this URI, e.g. "
                         "tcp://127.0.0.1:10300 or unix:///run/streamer.sock; empty = off (docs/wyoming.md)")
    wyoming_zeroconf: bool = Field(False, description="announce the Wyoming TCP service over mDNS for Home "
                                   "Assistant discovery (needs the zeroconf package)")

    @model_validator(mode="after")
    def _wyoming_uri(self) -> "ServerConfig":
        uri = urlsplit(self.wyoming)
        if self.wyoming and not (uri.scheme == "tcp" and uri.hostname and uri.port is not None
                                 or uri.scheme == "unix" and uri.path):
            raise ValueError(f"server.wyoming {self.wyoming!r} must look like tcp://HOST:PORT or unix:///PATH")
        if self.wyoming_zeroconf and uri.scheme != "tcp":
            raise ValueError("server.wyoming_zeroconf needs a tcp:// server.wyoming address")
        return self

    @field_validator("encoder_buckets")
    @classmethod
    def _buckets_within_whisper(cls, value: list[float]) -> list[float]:
        return _valid_buckets("server", value)

    @field_validator("bus")
    @classmethod
    def _bus_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("server.bus must be a redis://, rediss:// or unix:// URL")
        return value or None

    @model_validator(mode="after")
    def _tls_pair(self) -> "ServerConfig":
        if bool(self.certfile) != bool(self.keyfile):
            raise ValueError("server.certfile and server.keyfile must be given together")
        return self


class MicConfig(_Section):
    """Local capture (microphone or the monitor of an output device)."""

    device: str | None = Field(None, description="device name or index; None = system default")
    source: Literal["mic", "monitor"] = "mic"
    block_seconds: float = Field(0.1, gt=0, le=1)


class CompatConfig(_Section):
    """Other protocols served on the daemon's port, as adapters onto the same sessions and model."""

    openai: bool = Field(True, description="OpenAI-compatible API under /v1: POST /v1/audio/transcriptions and "
                         "/v1/audio/translations, GET /v1/models, and the /v1/realtime?intent=transcription "
                         "websocket (docs/openai.md)")
    max_upload_mb: float = Field(100.0, gt=0, description="largest audio file an upload may carry, MB (10^6 "
                                 "bytes); bigger ones are refused with 413")


class Settings(_Section):
    engine: EngineConfig = Field(default_factory=EngineConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    mic: MicConfig = Field(default_factory=MicConfig)
    compat: CompatConfig = Field(default_factory=CompatConfig)


class ConfigError(Exception):
    """Configuration that cannot be used; the message names the key and the problem."""


ENV_PREFIX = "STREAMER_"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    section, _, key = dotted.partition(".")
    if not key:
        raise ConfigError(f"override {dotted!r} must look like section.key (e.g. stream.min_chunk)")
    tree.setdefault(section, {})[key] = value


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            section, key = name[len(ENV_PREFIX):].lower().split("__", 1)
            _set_dotted(tree, f"{section}.{key}", _parse_scalar(value))
    if environ.get("STREAMER_TOKEN"):
        _set_dotted(tree, "server.token", environ["STREAMER_TOKEN"])
    return tree


def _parse_scalar(text: str) -> Any:
    """Environment and ``--set`` values are strings; read them as TOML scalars when they parse."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolve_config_path(name_or_path: str | os.PathLike[str]) -> Path:
    """``cpu`` means the shipped ``configs/cpu.toml`` (wherever it is installed); anything else is a path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = config_dir() / f"{path}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in config_dir().glob("*.toml")))
        raise ConfigError(f"config file {name_or_path!s} not found (profiles in configs/: {known})")
    return path


def load_settings(
    config: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build the settings from a TOML file, the environment and flat ``section.key`` overrides."""
    tree: dict[str, Any] = {}
    if config is not None:
        path = resolve_config_path(config)
        try:
            tree = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    tree = _merge(tree, _env_overrides(dict(os.environ if environ is None else environ)))
    flat: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(flat, dotted, value)
    tree = _merge(tree, flat)
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


def parse_set_flags(pairs: list[str]) -> dict[str, Any]:
    """``--set stream.min_chunk=0.5`` flags into overrides."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair!r}: expected section.key=value")
        out[key.strip()] = _parse_scalar(value.strip())
    return out
