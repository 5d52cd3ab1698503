"""The daemon's HTTP side: token and Origin checks, health, metrics and the web page's files.

Every route of the daemon (protocol v1 websockets and the compatibility APIs) goes through
:func:`access_guard`, so the token and Origin rules are written once. Paths under ``/v1/``,
``/deepgram/`` and ``/metrics`` need the token; ``/healthz`` and the page's static files do not
(the page asks for the token itself).
"""

from __future__ import annotations

import hmac
import mimetypes
from pathlib import Path
from typing import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from aiohttp import web

from streamer.daemon.metrics import Metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Browsers refuse module scripts served as anything but JavaScript; some systems map .js elsewhere.
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")


def text(status: int, body: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """A short plain-text answer (errors, health)."""
    return web.Response(status=status, text=body + "\n", headers={"Cache-Control": "no-store", **(headers or {})})


def bearer_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The token from ``Authorization: Bearer`` (or ``Token``, as Deepgram clients send it), or
    ``?token=`` for browsers, which cannot set headers on a websocket."""
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return query.get("token") or None


def token_ok(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison, so timing does not leak how much of a guess was right."""
    if not expected:
        return True
    return hmac.compare_digest(expected.encode(), (given or "").encode())


def origin_ok(allowed: list[str], headers: Mapping[str, str]) -> bool:
    """Browsers send Origin; non-browser clients usually do not and are not subject to it."""
    origin = headers.get("Origin")
    if not allowed or origin is None or "*" in allowed:
        return True
    if origin.rstrip("/") in (a.rstrip("/") for a in allowed):
        return True
    host = headers.get("Host", "")
    return bool(host) and urlsplit(origin).netloc == host  # the page this server served itself


PROTECTED_PREFIXES = ("/v1/", "/deepgram/")  # protocol v1 and OpenAI's paths; Deepgram's under its prefix


def protected(path: str) -> bool:
    return path.startswith(PROTECTED_PREFIXES) or path == "/metrics"


# A compatibility surface's own error shape for a refusal: (request, status, message, headers) -> a
# response, or None when the path is not that surface's (the plain-text answer is used then).
ShapedRefusal = Callable[[web.Request, int, str, Mapping[str, str]], "web.StreamResponse | None"]


def access_guard(token: str | None, allowed_origins: list[str], metrics: Metrics,
                 refusals: Callable[[], list[ShapedRefusal]] = list) -> Callable:
    """aiohttp middleware: 401 without the token, 403 from a foreign browser page.

    ``refusals`` lists the compatibility surfaces' error shapes, so that a client of another
    protocol is refused in that protocol's own shape (its SDK then reports it as an auth error).
    """

    def refuse(request: web.Request, status: int, message: str, headers: Mapping[str, str] | None = None):
        for shaped in refusals():
            response = shaped(request, status, message, headers or {})
            if response is not None:
                return response
        return text(status, message, headers)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if protected(request.path):
            if not token_ok(token, bearer_token(request.headers, request.query)):
                metrics.errors.labels(code="unauthorized").inc()
                return refuse(request, 401, "unauthorized: send 'Authorization: Bearer <token>' or ?token=<token>",
                              {"WWW-Authenticate": 'Bearer realm="streamer"'})
            if not origin_ok(allowed_origins, request.headers):
                metrics.errors.labels(code="forbidden_origin").inc()
                return refuse(request, 403, f"origin {request.headers.get('Origin')} is not allowed "
                              "(server.allowed_origins)")
        return await handler(request)

    return guard


def metrics_handler(metrics: Metrics, before: Callable[[], None] = lambda: None) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        before()
        return web.Response(body=metrics.render(), headers={"Content-Type": metrics.content_type})

    return handle


def add_web_page(app: web.Application, root: Path | None) -> None:
    """Serve the captions page: ``/`` is its index, other files by name (never anything outside it)."""

    async def page_file(request: web.Request) -> web.StreamResponse:
        if root is None:
            return text(404, "web client not installed (clients/web is missing)")
        target = _inside(root, request.match_info["path"] or "index.html")
        if target is None:
            return text(404, "not found")
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return web.FileResponse(target, headers={"Content-Type": kind, "Cache-Control": "no-store"})

    app.router.add_get("/{path:.*}", page_file)


def _inside(root: Path, relative: str) -> Path | None:
    """``relative`` resolved under ``root`` if it names a file there (no ``..`` or link escapes)."""
    try:
        target = (root / relative).resolve()
        target.relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() else None
