"""The Whisper engine: transformers weights, our batched greedy loop, DTW word times.

CPU: float32 with dynamic int8 linear layers (about 2x faster than fp32 at the same
transcript on 2 cores); the encoder in bfloat16 where the CPU multiplies bfloat16 natively (AMX
tiles or AVX-512 BF16; ``engine.encoder_dtype``).
CUDA: fp16, SDPA, a static KV cache and a ``torch.compile``d decoder step warmed up for every
batch size the daemon uses, so nothing recompiles while serving.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from streamer.config import EngineConfig
from streamer.engine.alignment import clamp_to_segments, segment_word_times, segments_of, teacher_forced, word_times
from streamer.engine.beam import beam_decode
from streamer.engine.decoding import TIME_PRECISION, RowSpec, TimestampRules, greedy_decode, stop_if_abandoned
from streamer.engine.drafts import drafted_decode
from streamer.engine.encoder import bucket_for, encode as encode_bucketed, requested_buckets
from streamer.engine.gpu import DRAFT_WIDTHS, CompileOptions, build_compiled
from streamer.engine.kv_decoder import KVDecoder
from streamer.engine.language import LanguageChoice, choose_languages
from streamer.engine.tokenizer import WhisperTokens
from streamer.engine.trace import AttentionTrace
from streamer.engine.views import WordTimingViews
from streamer.hypothesis import (DecodeRequest, EngineError, Hypothesis, MAX_PROMPT_TOKENS, MAX_WINDOW_SECONDS,
                                 SAMPLE_RATE, compression_ratio, validate_window)

log = logging.getLogger(__name__)


def _pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise EngineError("engine.device = cuda, but torch sees no CUDA GPU; use device = auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtype = getattr(torch, name)
    if device.type == "cpu" and dtype == torch.float16:
        raise EngineError("float16 is not supported on the CPU path; use float32 (with quantize = int8)")
    return dtype


class WhisperEngine(WordTimingViews):
    """Implements :class:`streamer.hypothesis.Engine` with a transformers Whisper checkpoint.

    Everything is fixed at construction, the compiled CUDA decoder included; a different
    word-timing method is a cheap view (:meth:`with_word_timestamps`) sharing the weights.
    """

    max_window_seconds = MAX_WINDOW_SECONDS
    max_prompt_tokens = MAX_PROMPT_TOKENS

    def __init__(self, model, tokens: WhisperTokens, generation: dict, config: EngineConfig, name: str,
                 device: torch.device, dtype: torch.dtype, quantized: bool = False,
                 compile: CompileOptions | None = None):
        from transformers import WhisperFeatureExtractor

        self.model, self.tokens, self.config, self.name = model, tokens, config, name
        self.torch_device, self.torch_dtype = device, dtype
        self.device = device.type
        self.dtype = "int8" if quantized else str(dtype).removeprefix("torch.")
        self.encoder_dtype = _weights_dtype(model.model.encoder)
        encoder_int8 = any("quantized" in type(m).__module__ for m in model.model.encoder.modules())
        if self.encoder_dtype != dtype or (quantized and not encoder_int8):
            self.dtype += f", encoder {str(self.encoder_dtype).removeprefix('torch.')}"
        self.languages = tokens.languages
        self.decoder = KVDecoder(model, cross_dtype=_cross_dtype(config.cross_attention_dtype, device,
                                                                 self.encoder_dtype))
        self.features = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
        # recent transformers compute the STFT with torch on the model's device (a batch of 32 on the GPU)
        self._features_on_device = "device" in inspect.signature(self.features.__call__).parameters
        self.alignment_heads = self._alignment_heads(generation, model.config)
        vocab = model.config.vocab_size
        self.rules = TimestampRules(tokens, generation.get("suppress_tokens") or model.config.suppress_tokens or [],
                                    generation.get("begin_suppress_tokens") or [220, tokens.eot], vocab, device)
        self.compiled = build_compiled(self.decoder, tokens, model.config.d_model, device, dtype,
                                       compile) if compile else None
        self.beam_search = self.compiled is None   # the compiled CUDA loop is greedy only
        self.encoder_cuts = self.compiled is None  # and its shapes assume 30 s of encoder frames
        self.last_timing: dict[str, float] = {}

    @staticmethod
    def _alignment_heads(generation: dict, model_config) -> list[tuple[int, int]]:
        heads = generation.get("alignment_heads")
        if heads:
            return [tuple(h) for h in heads]
        layers, n_heads = model_config.decoder_layers, model_config.decoder_attention_heads
        return [(layer, h) for layer in range(layers // 2, layers) for h in range(n_heads)]

    # -- the Engine interface ---------------------------------------------------------------
    def prompt_tokens(self, text: str) -> int:
        return self.tokens.prompt_tokens(text)

    def decode(self, request: DecodeRequest) -> Hypothesis:
        return self.decode_batch([request])[0]

    @torch.inference_mode()
    def decode_batch(self, requests: Sequence[DecodeRequest]) -> list[Hypothesis]:
        if not requests:
            return []
        audios = [validate_window(r.audio) for r in requests]
        t0 = time.perf_counter()
        # buckets only for windows in a language the caller fixed (or an English-only model: nothing to detect):
        # language detection on a cut encoder took Spanish for Catalan and Greek, um-hm for Arabic
        # (docs/engine.md, encoder buckets)
        fixed = not self.tokens.multilingual or all(r.language and not r.detect_language for r in requests)
        encoder_out = self.encode(audios, cut=fixed, buckets=requested_buckets(requests))
        t1 = time.perf_counter()
        with self._one_projection(encoder_out):
            languages = choose_languages(requests, encoder_out, self.decoder, self.tokens)
            rows = [self._row(r, lang, len(a) / SAMPLE_RATE) for r, lang, a in zip(requests, languages, audios)]
            stop_if_abandoned(rows)  # the encoder was the long part; the loops check again at every step
            results, stats = self._decode_rows(encoder_out, rows, requests)
            t2 = time.perf_counter()
            hyps = self._hypotheses(requests, audios, encoder_out, rows, results, languages)
        t3 = time.perf_counter()
        self.last_timing = {"encode": t1 - t0, "decode": t2 - t1, "align": t3 - t2,
                            "tokens": float(sum(len(r.tokens) for r in results)),
                            **{k: float(v) for k, v in stats.items()}}
        return hyps

    def _one_projection(self, encoder_out: torch.Tensor):
        """Detection, decode and word times share one projection of the cross-attention keys on the CPU.

        Not on a GPU: there a batch of 64 large-v3 windows holds 16 GB of them, and keeping a set
        for the whole decode beside the static buffers would raise the peak by that much.
        """
        if self.torch_device.type != "cpu":
            return contextlib.nullcontext()
        return self.decoder.sharing_projections(encoder_out)

    def _draft(self, request: DecodeRequest) -> tuple[int, ...]:
        """The request's draft, if drafts are on; ids the model cannot emit are dropped (a stale caller)."""
        if not self.config.drafts or not request.draft:
            return ()
        vocab = self.model.config.vocab_size
        return tuple(t for t in request.draft if 0 <= t < self.tokens.eot or self.tokens.timestamp_begin <= t < vocab)

    def _decode_rows(self, encoder_out: torch.Tensor, rows: list[RowSpec], requests: Sequence[DecodeRequest]):
        """Every row decoded with its request's beam (greedy rows and each beam size in their own batch).

        The compiled CUDA loop is greedy only: there every row is decoded greedily."""
        drafts = [self._draft(r) for r in requests]
        beams = [(r.beam_size or self.config.beam_size) if self.beam_search else 1 for r in requests]
        if len(set(beams)) == 1:
            return self._decode_group(encoder_out, rows, drafts, beams[0])
        results: list = [None] * len(rows)
        stats: dict[str, float] = {}
        for beam in sorted(set(beams)):
            index = [i for i, b in enumerate(beams) if b == beam]
            part, part_stats = self._decode_group(self.decoder.select_rows(encoder_out, index),
                                                  [rows[i] for i in index], [drafts[i] for i in index], beam)
            for i, result in zip(index, part):
                results[i] = result
            for key, value in part_stats.items():
                stats[key] = stats.get(key, 0.0) + value
        return results, stats

    def _decode_group(self, encoder_out: torch.Tensor, rows: list[RowSpec], drafts: list[tuple[int, ...]],
                      beam: int):
        """One group of rows: greedy, or beam search with ``beam`` > 1; with drafts, verified in blocks (on the
        compiled path too, with ``engine.drafts``); on the compiled path rows are padded up to a warmed batch size."""
        limit = self.config.max_new_tokens
        if self.compiled is not None:
            return self.compiled.decode(encoder_out, rows, self.rules, limit, drafts=drafts)
        if beam > 1:
            return beam_decode(self.decoder, encoder_out, rows, self.tokens, self.rules, limit, beam), {}
        trace = AttentionTrace(self.alignment_heads, self.tokens.eot) if self.config.fused_alignment else None
        if any(drafts):
            return drafted_decode(self.decoder, encoder_out, rows, self.tokens, self.rules, limit, drafts, trace=trace)
        return greedy_decode(self.decoder, encoder_out, rows, self.tokens, self.rules, limit, trace=trace), {}

    # -- stages ---------------------------------------------------------------------------
    def encode(self, audios: list[np.ndarray], cut: bool = True,
               buckets: Sequence[float] | None = None) -> torch.Tensor:
        """Log-mel features (padded to Whisper's 30 s, or, if ``cut``, cut to a bucket) through the encoder.

        ``buckets``: the lengths to cut to (None: ``engine.encoder_buckets``)."""
        extra = {"device": self.device} if self._features_on_device else {}
        feats = self.features(audios, sampling_rate=SAMPLE_RATE, return_tensors="pt", **extra).input_features
        feats = feats.to(self.torch_device, self.encoder_dtype)
        if buckets is None:
            buckets = self.config.encoder_buckets
        buckets = buckets if cut and self.compiled is None else ()  # compiled: 30 s shapes
        seconds = bucket_for(max(len(a) for a in audios) / SAMPLE_RATE, buckets)
        return encode_bucketed(self.model.model.encoder, feats, seconds).to(self.torch_dtype)

    def _row(self, request: DecodeRequest, language: LanguageChoice, duration: float) -> RowSpec:
        prefix = self.tokens.prompt_prefix(request.prompt, request.vocabulary)
        sot_index = len(prefix)
        prefix += self.tokens.sot_sequence(language.code, request.task)
        return RowSpec(prefix, sot_index, int(np.ceil(duration / TIME_PRECISION)), request.stop_ratio,
                       request.abandoned)

    def _hypotheses(self, requests, audios, encoder_out, rows, results, languages) -> list[Hypothesis]:
        text_tokens = [[t for t in r.tokens if t < self.tokens.eot] for r in results]
        if all(r.evidence is not None for r in results):  # the loop recorded it: no second pass
            fused = [r.evidence.text_rows(r.tokens, self.tokens.eot) for r in results]
            weights, probs, prefix_lens = [w for w, _ in fused], [p for _, p in fused], [1] * len(results)
        else:
            weights, probs, prefix_lens = self._teacher_forced(requests, languages, encoder_out, text_tokens)
        hyps = []
        for b, result in enumerate(results):
            duration = len(audios[b]) / SAMPLE_RATE
            words = self._word_times(weights[b], prefix_lens[b], result.tokens, text_tokens[b], probs[b],
                                     duration, languages[b].code)
            text = self.tokens.decode(text_tokens[b])
            hyps.append(Hypothesis(
                words=tuple(words), language=languages[b].code, tokens=tuple(result.tokens),
                avg_logprob=result.sum_logprob / (len(result.tokens) + 1),
                no_speech_prob=result.no_speech_prob, compression_ratio=compression_ratio(text),
                language_probability=languages[b].probability, language_probs=languages[b].candidates,
            ))
        return hyps

    def _teacher_forced(self, requests, languages, encoder_out, text_tokens):
        """Alignment weights and token probabilities from a second pass over ``sot <|notimestamps|> text eot``."""
        seqs, prefix_lens = [], []
        for req, lang, text in zip(requests, languages, text_tokens):
            prefix = self.tokens.sot_sequence(lang.code, req.task) + [self.tokens.no_timestamps]
            seqs.append(prefix + text + [self.tokens.eot])
            prefix_lens.append(len(prefix))
        weights, hidden = teacher_forced(self.decoder, encoder_out, seqs, self.alignment_heads, self.tokens.eot)
        return weights, self._token_probs(hidden, prefix_lens, text_tokens), prefix_lens

    def _word_times(self, weights, prefix_len, all_tokens, text_tokens, probs, duration, language) -> list:
        """Word times by the configured method (see ``streamer bench align`` for their accuracy)."""
        method = self.config.word_timestamps
        segments = segments_of(all_tokens, self.tokens.timestamp_begin, self.tokens.eot, duration)
        if method == "segments":
            return segment_word_times(segments, probs, self.tokens, language)
        words = word_times(weights, prefix_len, text_tokens, probs, duration, self.tokens, language)
        return clamp_to_segments(words, segments, self.tokens, language) if method == "both" else words

    def _token_probs(self, hidden: torch.Tensor, prefix_lens: list[int], text_tokens: list[list[int]]) -> list[list[float]]:
        """Per-token probabilities of the text under the no-timestamps prefix (word confidence)."""
        out = []
        for b, text in enumerate(text_tokens):
            if not text:
                out.append([])
                continue
            rows = hidden[b, prefix_lens[b] - 1: prefix_lens[b] - 1 + len(text)]
            p = torch.softmax(self.decoder.logits(rows).float(), dim=-1)
            out.append(p[torch.arange(len(text)), torch.tensor(text, device=self.torch_device)].tolist())
        return out


def load_whisper(config: EngineConfig, compile: CompileOptions | None = None) -> WhisperEngine:
    """Load weights from an embedded name, a local folder or a hub id, and prepare the device path.

    ``compile`` defaults to the CUDA serving setup (when ``config.compile`` and a GPU); pass
    options to trace the static-cache decoder elsewhere (tests, the CPU bench).
    """
    from streamer.engine.models import resolve_model

    source = resolve_model(config.model, Path(config.cache_dir) if config.cache_dir else None)
    device = _pick_device(config.device)
    dtype = _pick_dtype(config.dtype, device)
    if config.threads:
        torch.set_num_threads(config.threads)
    model = _load_model(source, dtype, device)
    int8 = device.type == "cpu" and config.quantize in ("auto", "int8") and dtype == torch.float32
    model.model.encoder.to(_encoder_dtype(config.encoder_dtype, device, dtype, int8))
    tokens = _load_tokens(source, model.config.vocab_size)
    generation = _load_generation(source)
    quantized = False
    if int8:
        model, quantized = _quantize_int8(model, rows=config.drafts, encoder=config.encoder_dtype != "float32")
    if compile is None and device.type == "cuda" and config.compile:
        widths = DRAFT_WIDTHS if config.drafts else ()
        compile = CompileOptions(batch_sizes=tuple(config.batch_sizes), draft_widths=widths)
    engine = WhisperEngine(model, tokens, generation, config, name=config.model, device=device, dtype=dtype,
                           quantized=quantized, compile=compile)
    if engine.compiled is None and config.warmup:
        engine.decode(DecodeRequest(np.zeros(SAMPLE_RATE, dtype=np.float32)))
    return engine


def _quantize_int8(model, rows: bool = False, encoder: bool = True) -> tuple[object, bool]:
    """Dynamic int8 linear layers: on 2 CPU cores this halves decode time at the same transcript.

    ``rows``: the decoder's layers quantise each token on its own (:mod:`streamer.engine.rowquant`),
    so a token's logits do not depend on what else is in the pass; draft verification needs
    that to be lossless. The encoder (always one full window per row) keeps torch's layers, and
    stays as it is when it was moved to bfloat16 or ``encoder`` is false (``engine.encoder_dtype``).
    torch marks the eager quantisation API deprecated (but ships it through 2.14); if a future
    torch drops it we keep running in float32 rather than fail.
    """
    import warnings

    def dynamic(module):
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if rows:
                from streamer.engine.rowquant import RowQuantizedLinear, quantize_rows

                quantize_rows(model.model.decoder)
                model.proj_out = RowQuantizedLinear(model.proj_out)
            else:
                dynamic(model.model.decoder)
                model.proj_out = dynamic(torch.nn.Sequential(model.proj_out))[0]  # it swaps children only
            if encoder and _weights_dtype(model.model.encoder) == torch.float32:
                dynamic(model.model.encoder)
            return model, True
    except (AttributeError, RuntimeError) as exc:
        log.warning("int8 quantisation unavailable in this torch (%s); using float32", exc)
        return model, False


def _weights_dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _encoder_dtype(name: str, device: torch.device, dtype: torch.dtype, int8: bool) -> torch.dtype:
    """The encoder's dtype on the CPU: bfloat16 where the CPU multiplies bfloat16 natively.

    Measured (docs/engine.md): base's encoder on a 30 s window 0.283 -> 0.128 s against int8 on AMX,
    0.32 -> 0.36 s with AVX-512 BF16 alone (AMD Zen 4), and on both the streamed text better in almost
    every group. ``auto`` replaces only an int8 encoder (an unquantised float32 engine was asked for
    exact float32). Elsewhere bfloat16 is emulated, 3-8x slower, and the encoder stays int8
    (``float32`` is the better-text choice there, at about 0.2 s more per update).
    """
    if device.type != "cpu" or dtype != torch.float32 or name in ("model", "float32"):
        return dtype
    if name == "bfloat16":
        return torch.bfloat16
    return torch.bfloat16 if int8 and _native_bfloat16() else dtype


def _cpu_reports(helper: str) -> bool:
    """One of torch's private CPU feature helpers; a torch without it counts as no."""
    return bool(getattr(torch.cpu, helper, lambda: False)())


def _native_bfloat16() -> bool:
    """oneDNN runs bfloat16 matrix products on AMX tiles or AVX-512 BF16 (a torch without it: emulated)."""
    native = _cpu_reports("_is_amx_tile_supported") or _cpu_reports("_is_avx512_bf16_supported")
    return native and torch.backends.mkldnn.is_available()


def _cross_dtype(name: str, device: torch.device, encoder_dtype: torch.dtype) -> torch.dtype | None:
    """The cross-attention keys/values' dtype on the CPU (None: the encoder output's, float32 there).

    ``auto`` follows a bfloat16 encoder, whose output already has bfloat16's precision, on AMX
    machines: a step then reads half the bytes, and there that made it faster. Without AMX (AVX-512
    BF16 only) the bfloat16 attention was slower instead (decoder + word times 0.48 -> 0.53 s per
    update, docs/engine.md), so the keys stay float32 there. The GPU path keeps its dtype (its static
    buffers and captured graphs are typed once).
    """
    if device.type != "cpu" or name == "model":
        return None
    if name == "bfloat16" or (encoder_dtype == torch.bfloat16 and _cpu_reports("_is_amx_tile_supported")):
        return torch.bfloat16
    return None


def _load_model(source: Path | str, dtype: torch.dtype, device: torch.device):
    try:
        from transformers import WhisperForConditionalGeneration
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise EngineError(f"transformers is not installed ({exc}); pip install 'streamer'") from None
    try:
        try:
            model = WhisperForConditionalGeneration.from_pretrained(str(source), dtype=dtype, attn_implementation="sdpa")
        except TypeError:  # transformers 4.x spells it torch_dtype
            model = WhisperForConditionalGeneration.from_pretrained(str(source), torch_dtype=dtype,
                                                                    attn_implementation="sdpa")
    except OSError as exc:
        raise EngineError(
            f"could not load Whisper model {source!s}: {exc}. For a hub id you need network access (or a "
            "pre-populated HF cache); offline, use an embedded model (base, tiny.en) or a local folder."
        ) from None
    except Exception as exc:  # a damaged folder: safetensors/json errors
        raise EngineError(f"model files in {source!s} are unreadable ({type(exc).__name__}: {exc}); "
                          "delete that folder (or the streamer cache) and try again") from None
    return model.to(device).eval()


def _model_file(source: Path | str, filename: str) -> Path | None:
    if isinstance(source, Path):
        path = source / filename
        return path if path.is_file() else None
    try:
        from huggingface_hub import hf_hub_download
        return Path(hf_hub_download(source, filename))
    except Exception:  # noqa: BLE001 - any hub failure means "not available"
        return None


def _load_tokens(source: Path | str, vocab_size: int) -> WhisperTokens:
    path = _model_file(source, "tokenizer.json")
    if path is None:
        raise EngineError(f"{source!s} has no tokenizer.json; streamer needs a fast (tokenizers) Whisper tokenizer")
    return WhisperTokens.from_file(path, vocab_size)


def _load_generation(source: Path | str) -> dict:
    path = _model_file(source, "generation_config.json")
    return json.loads(path.read_text()) if path else {}
