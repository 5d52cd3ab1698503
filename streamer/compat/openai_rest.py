"""OpenAI's audio REST API on the daemon: ``POST /v1/audio/transcriptions``, ``/v1/audio/translations``
and ``GET /v1/models``, so tools built on the ``openai`` SDK work with only ``base_url`` changed.

An upload is spooled to a temporary file (bounded by ``compat.max_upload_mb``), then run as one
batch session on the host (:mod:`streamer.compat.file_job`): same VAD, scheduler, model and
commit policy as a live stream. ``stream=true`` answers with server-sent events as words commit.
Every refusal is in OpenAI's error shape (``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from streamer import protocol
from streamer.audio import AudioError, AudioFileReader
from streamer.compat import openai_formats as fmt
from streamer.compat.file_job import FileTranscription, JobError
from streamer.protocol import StartError, StartParams

if TYPE_CHECKING:
    from streamer.daemon.server import StreamerServer

log = logging.getLogger(__name__)

OPENAI_PATHS = ("/v1/audio/", "/v1/models", "/v1/realtime")
MAX_FIELD_BYTES = 64 * 1024   # a form field other than the file (prompt, language, ...)
CHUNK = 256 * 1024
CREATED = int(time.time())    # /v1/models "created": when this daemon started


class RequestError(Exception):
    """A request the API refuses: HTTP status, message, and the form field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code, self.headers = status, param, code, headers or {}

    def response(self) -> web.Response:
        return fmt.error_response(self.status, str(self), param=self.param, code=self.code, headers=self.headers)


@dataclass
class Upload:
    """The form of one request: its fields, and the file spooled to disk."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    path: Path | None = None
    filename: str = ""
    size: int = 0

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else default

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()


@dataclass(frozen=True)
class Options:
    """The validated request: what to run and how to answer."""

    params: StartParams
    response_format: str
    stream: bool
    temperature: float
    word_times: bool


class OpenAIRest:
    """The REST surface (see the module docstring); registered through ``StreamerServer.surfaces``."""

    def routes(self, server: StreamerServer) -> list[web.RouteDef]:
        self.server = server
        return [web.post("/v1/audio/transcriptions", server.tracked(self._transcriptions)),
                web.post("/v1/audio/translations", server.tracked(self._translations)),
                web.get("/v1/models", self._models),
                web.get("/v1/models/{model}", self._model)]

    def auth_refusal(self, request: web.Request, status: int, message: str,
                headers: Mapping[str, str]) -> web.Response | None:
        """The daemon's token and Origin refusals, in OpenAI's shape on OpenAI's paths."""
        if not request.path.startswith(OPENAI_PATHS):
            return None
        code = "invalid_api_key" if status == 401 else None
        return fmt.error_response(status, message, code=code, headers=dict(headers))

    # ----------------------------------------------------------------- models
    def _model_ids(self) -> list[str]:
        engine = self.server.host.engine
        return ([engine.name] if engine is not None else []) + ["whisper-1"]

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._model_entry(m) for m in self._model_ids()]})

    async def _model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if name not in self._model_ids():
            return fmt.error_response(404, f"the model {name!r} does not exist; this server serves "
                                      f"{', '.join(self._model_ids())}", param="model", code="model_not_found")
        return web.json_response(self._model_entry(name))

    @staticmethod
    def _model_entry(name: str) -> dict:
        return {"id": name, "object": "model", "created": CREATED, "owned_by": "streamer"}

    # ----------------------------------------------------------------- transcriptions
    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "transcribe")

    async def _translations(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "translate")

    async def _handle(self, request: web.Request, task: str) -> web.StreamResponse:
        upload = Upload()
        reader: AudioFileReader | None = None
        try:
            self._check_ready()
            upload = await read_upload(request, int(self.server.settings.compat.max_upload_mb * 1_000_000))
            options = self._options(upload, task)
            reader = await asyncio.get_running_loop().run_in_executor(None, _open, upload.path)
            verdict = self.server.host.admit_batch()
            if not verdict.admit:
                raise RequestError(429, f"{verdict.reason}; retry in about {verdict.retry_after:.0f} s",
                                   code="server_busy", headers={"Retry-After": f"{verdict.retry_after:.0f}"})
            log.info("openai %s: %s (%d bytes) format=%s stream=%s language=%s", task, upload.filename or "file",
                     upload.size, options.response_format, options.stream, options.params.language)
            job = FileTranscription(self.server.host, options.params)
            if options.stream:
                return await self._stream(request, job, reader)
            return await self._answer(request, job, reader, options, task)
        except RequestError as exc:
            self.server.metrics.errors.labels(code=exc.code or f"http_{exc.status}").inc()
            return exc.response()
        finally:
            if reader is not None:
                reader.close()
            upload.remove()

    def _check_ready(self) -> None:
        if not self.server.host.ready:
            raise RequestError(503, "the model is still loading; retry in a few seconds", code="not_ready",
                               headers={"Retry-After": "5"})
        if self.server.draining or self.server.shutting_down:
            raise RequestError(503, "this server is draining for a restart; use another one (or retry)",
                               code="server_busy", headers={"Retry-After": "10"})

    def _options(self, upload: Upload, task: str) -> Options:
        if upload.path is None:
            raise RequestError(400, "no file: send the audio as the multipart form field 'file'", param="file")
        if upload.size == 0:
            raise RequestError(400, "the file is empty", param="file", code="empty_file")
        response_format = upload.get("response_format") or "json"
        if response_format not in fmt.RESPONSE_FORMATS:
            raise RequestError(400, f"response_format must be one of {', '.join(fmt.RESPONSE_FORMATS)}, got "
                               f"{response_format!r}", param="response_format")
        granularities = set(upload.fields.get("timestamp_granularities[]", []) +
                            upload.fields.get("timestamp_granularities", []))
        if granularities - {"word", "segment"}:
            raise RequestError(400, "timestamp_granularities may hold 'word' and 'segment'",
                               param="timestamp_granularities")
        if granularities and response_format != "verbose_json":
            raise RequestError(400, "timestamp_granularities needs response_format=verbose_json",
                               param="timestamp_granularities")
        temperature = _number(upload.get("temperature") or "0", "temperature")
        if not 0.0 <= temperature <= 1.0:
            raise RequestError(400, f"temperature must be between 0 and 1, got {temperature:g}", param="temperature")
        stream = (upload.get("stream") or "false").strip().lower()
        if stream not in ("true", "false", "1", "0"):
            raise RequestError(400, f"stream must be true or false, got {stream!r}", param="stream")
        return Options(self._params(upload, task), response_format, stream in ("true", "1"), temperature,
                       "word" in granularities)

    def _params(self, upload: Upload, task: str) -> StartParams:
        host = self.server.host
        languages = tuple(getattr(host.engine, "languages", ()) or ())
        if task == "translate" and languages == ("en",):
            task = "transcribe"  # an English-only model already writes English: its transcript is the translation
        fields = {"task": task, "prompt": upload.get("prompt")}
        if upload.get("language"):
            fields["language"] = upload.get("language")
        try:
            params = protocol.parse_start(fields, host.default_params())
            host.check_start(params)
        except StartError as exc:
            param = next((name for name in ("language", "prompt") if str(exc).startswith(name)), None)
            raise RequestError(400, str(exc), param=param) from None
        return params

    async def _answer(self, request: web.Request, job: FileTranscription, reader: AudioFileReader,
                      options: Options, task: str) -> web.StreamResponse:
        """Run the whole file, then render it; stop early if the client hangs up."""
        try:
            async for _ in job.updates(reader):
                if request.transport is None or request.transport.is_closing():
                    log.info("openai %s: client went away; dropping its transcription", task)
                    return web.Response(status=499)
        except (JobError, AudioError) as exc:
            raise RequestError(400 if isinstance(exc, AudioError) else 500, f"transcription failed: {exc}",
                               param="file" if isinstance(exc, AudioError) else None) from None
        out = job.outcome
        return fmt.render(options.response_format, out.words, text=out.text, language=out.language,
                          duration=out.duration, task="translate" if task == "translate" else "transcribe",
                          temperature=options.temperature, word_times=options.word_times)

    async def _stream(self, request: web.Request, job: FileTranscription,
                      reader: AudioFileReader) -> web.StreamResponse:
        """Server-sent events: ``transcript.text.delta`` as words commit, then ``transcript.text.done``."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        said = ""
        try:
            async for update in job.updates(reader):
                delta = "".join(w.word for w in update.words)
                if not said:
                    delta = delta.lstrip()
                if delta:
                    said += delta
                    await response.write(fmt.sse({"type": "transcript.text.delta", "delta": delta}))
            out = job.outcome
            await response.write(fmt.sse({"type": "transcript.text.done", "text": out.text,
                                          "usage": fmt.usage(out.duration)}))
        except (JobError, AudioError) as exc:
            status = 400 if isinstance(exc, AudioError) else 500
            await response.write(fmt.sse({"type": "error", **fmt.error_body(f"transcription failed: {exc}", status)}))
        except ConnectionError:
            log.info("openai stream: client went away; dropping its transcription")
            return response
        await response.write_eof()
        return response


def _open(path: Path | None) -> AudioFileReader:
    try:
        return AudioFileReader(path)
    except AudioError as exc:
        raise RequestError(400, f"the file is not audio the server can decode: {exc}", param="file",
                           code="invalid_audio") from None


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise RequestError(400, f"{name} must be a number, got {text!r}", param=name) from None


async def read_upload(request: web.Request, limit: int) -> Upload:
    """Read a multipart form: fields into memory, the file to a temporary file, at most ``limit`` bytes.

    A request whose declared size is already far over the limit is refused before its body is read
    (aiohttp then reads and drops the rest for a while, so the client still gets the 413).
    """
    if not request.content_type.startswith("multipart/"):
        raise RequestError(400, "send multipart/form-data with the audio in the field 'file' "
                           f"(got {request.content_type or 'no content type'})", param="file")
    if request.content_length is not None and request.content_length > limit + MAX_FIELD_BYTES * 4:
        raise RequestError(413, _too_big(limit), param="file", code="file_too_large")
    upload = Upload()
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if part.name == "file" and upload.path is None:
                upload.filename = part.filename or ""
                await _spool(part, upload, limit)
            else:
                value = bytearray()
                while chunk := await part.read_chunk(CHUNK):
                    value += chunk
                    if len(value) > MAX_FIELD_BYTES:
                        raise RequestError(400, f"form field {part.name!r} is over {MAX_FIELD_BYTES} bytes",
                                           param=part.name)
                upload.fields.setdefault(part.name or "", []).append(value.decode("utf-8", "replace"))
    except ValueError as exc:  # aiohttp: a malformed multipart body
        upload.remove()
        raise RequestError(400, f"malformed multipart body: {exc}") from None
    except BaseException:
        upload.remove()
        raise
    return upload


async def _spool(part, upload: Upload, limit: int) -> None:
    suffix = Path(upload.filename).suffix[:16] if upload.filename else ""
    handle, name = tempfile.mkstemp(prefix="streamer-upload-", suffix=suffix)
    upload.path = Path(name)
    with os.fdopen(handle, "wb") as out:
        while chunk := await part.read_chunk(CHUNK):
            upload.size += len(chunk)
            if upload.size > limit:
                raise RequestError(413, _too_big(limit), param="file", code="file_too_large")
            out.write(chunk)


def _too_big(limit: int) -> str:
    return f"the file is over this server's upload limit of {limit / 1e6:g} MB (compat.max_upload_mb)"
