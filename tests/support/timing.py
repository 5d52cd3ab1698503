"""Time in tests: every deadline scales with ``STREAMER_TEST_TIME_FACTOR``, and waits poll for events.

A loaded CI machine then makes tests slower instead of failing them: set the factor to 2 or 3
and every timeout and deadline given through :func:`scaled` grows with it. Waiting for a
condition (:func:`wait_for`, :func:`wait_until`) replaces sleeping a guessed time and asserting.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Callable

TIME_FACTOR = float(os.environ.get("STREAMER_TEST_TIME_FACTOR", "1") or 1)


def scaled(seconds: float) -> float:
    """A deadline or timeout, stretched by the machine's time factor."""
    return seconds * TIME_FACTOR


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``predicate`` (blocking) until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {scaled(timeout):.0f} s waiting for {what}")
        time.sleep(interval)


async def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.01,
                     what: str = "condition") -> Any:
    """The asyncio form of :func:`wait_for`: the event loop keeps running while we wait."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {scaled(timeout):.0f} s waiting for {what}")
        await asyncio.sleep(interval)


def settled(read: Callable[[], Any], quiet: float = 0.5, timeout: float = 10.0) -> Any:
    """``read()`` once it has stopped changing for ``quiet`` seconds (a UI catching up with input)."""
    deadline = time.monotonic() + scaled(timeout)
    value, since = read(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() >= deadline:
            raise AssertionError(f"still changing after {scaled(timeout):.0f} s: {value!r}")
        time.sleep(0.05)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
    return value
