"""The ``streamer`` command. Each subcommand lives in the module that implements it.

A module listed in ``COMMANDS`` exposes ``register(subparsers)``, which adds its parser and
sets ``func`` to a callable taking the parsed args and returning an exit code. Imports are
lazy so ``streamer --help`` stays fast and a missing optional package only breaks its own
subcommand, with a message.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from streamer import __version__

COMMANDS = [
    "streamer.replay",          # transcribe
    "streamer.daemon.app",      # serve
    "streamer.daemon.mic",      # mic
    "streamer.bench.cli",       # bench
    "streamer_clients.captions",  # captions
    "streamer_clients.dictate",   # dictate
    "streamer_clients.overlay",   # overlay
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer", description="Real-time Whisper transcription.")
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
                continue  # not written yet / not installed
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
