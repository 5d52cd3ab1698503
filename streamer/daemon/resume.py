"""Resume tokens: what lets any daemon continue a stream another one (or this one) was serving.

The state a stream needs to continue is small and already on the client's side of the wire:
the committed text, the audio time up to which words are committed, and the audio after it.
The server signs that state into a token (HMAC-SHA256 over the session id, the last ``seq``,
the committed-until time, a held punctuation mark and an expiry) and hands a fresh one out with
``ready`` and every ``transcript``. A daemon that shares the secret (``server.resume_secret``)
verifies a presented token without any shared storage: the state cannot be forged, a time in
the future is refused, an old token expires. Sans-I/O: no clock of its own, ``now`` is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any, Mapping

VERSION = "r1"


class ResumeError(ValueError):
    """A resume that cannot be honoured; ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ResumeState:
    """Where a stream stands, as signed in its latest token."""

    session: str
    seq: int                 # the last transcript event's seq
    committed_until: float   # audio before this (stream seconds) is fully committed
    held: str = ""           # a trailing mark waiting for what follows the last committed word
    tail: str = ""           # the end of the committed text (context for the next decode)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ResumeTokens:
    """Issues and checks resume tokens with one secret (share it between replicas)."""

    def __init__(self, secret: str | None, ttl: float = 600.0) -> None:
        self._key = (secret or secrets.token_hex(32)).encode()
        self.ttl = ttl

    def issue(self, state: ResumeState, now: float) -> str:
        body = json.dumps({"s": state.session, "q": state.seq, "u": round(state.committed_until, 3),
                           "h": state.held, "t": state.tail[-200:], "e": round(now + self.ttl)},
                          separators=(",", ":"), ensure_ascii=False).encode()
        return f"{VERSION}.{_b64(body)}.{_b64(self._sign(body))}"

    def verify(self, token: Any, now: float) -> ResumeState:
        """The state a token vouches for, or :class:`ResumeError` saying why not."""
        try:
            version, body_text, signature = str(token).split(".")
            body = _unb64(body_text)
            valid = version == VERSION and hmac.compare_digest(_unb64(signature), self._sign(body))
        except (ValueError, TypeError):
            valid = False
        if not valid:
            raise ResumeError("resume_invalid", "the resume token is not one this server issued (or it was "
                              "altered); start a new session")
        data = json.loads(body)
        if data["e"] < now:
            raise ResumeError("resume_expired", "the resume token has expired; start a new session")
        return ResumeState(data["s"], int(data["q"]), float(data["u"]), data.get("h", ""), data.get("t", ""))

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()


MAX_CONTEXT = 5.0  # s: committed audio a resume may replay before committed_until, as decoding context


def check_claim(state: ResumeState, claim: Mapping[str, Any], max_retained: float) -> None:
    """The client's own account must match what the token vouches for."""
    if claim.get("session") not in (None, state.session):
        raise ResumeError("resume_invalid", f"the token belongs to session {state.session!r}, not "
                          f"{claim.get('session')!r}")
    until = claim.get("committed_until", state.committed_until)
    if not isinstance(until, (int, float)) or abs(until - state.committed_until) > 1e-3:
        raise ResumeError("resume_mismatch", f"committed_until {until!r} is not where the server committed up to "
                          f"({state.committed_until:.3f} s, in the latest token); send audio from that time")
    retained = claim.get("retained_seconds", 0.0)
    if not isinstance(retained, (int, float)) or retained < 0 or retained > max_retained:
        raise ResumeError("resume_too_long", f"retained_seconds {retained!r} is over the limit of "
                          f"{max_retained:g} s of audio a resume may replay")
    context = claim.get("context_seconds", 0.0)
    if (not isinstance(context, (int, float)) or not 0 <= context <= MAX_CONTEXT or context > retained
            or context > state.committed_until + 1e-3):
        raise ResumeError("resume_mismatch", f"context_seconds {context!r} must be between 0 and {MAX_CONTEXT:g}, "
                          "within the retained audio and after the stream's start")


class TokenResumer:
    """What a session needs: check a client's resume claim, and sign the stream's state."""

    def __init__(self, tokens: ResumeTokens, max_retained: float, clock) -> None:
        self.tokens, self.max_retained, self.clock = tokens, max_retained, clock

    def verify(self, claim: Mapping[str, Any]) -> ResumeState:
        state = self.tokens.verify(claim.get("token"), self.clock())
        check_claim(state, claim, self.max_retained)
        return state

    def token(self, state: ResumeState) -> str:
        return self.tokens.issue(state, self.clock())
