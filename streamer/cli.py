"""The ``streamer`` command. Each subcommand lives in the module that implements it.

A module listed in ``COMMANDS`` exposes ``register(subparsers)``, which adds its parser and
sets ``func`` to a callable taking the parsed args and returning an exit code. Imports are
lazy so ``streamer --help`` stays fast and a missing optional package only breaks its own
subcommand, with a message.

Logging: daemons log at INFO; a subcommand whose output is its result (``transcribe``) sets
``log_level=logging.WARNING`` as a parser default so that stdout and stderr stay clean. Each
``-v`` (before or after the subcommand) lowers the threshold by one level, to DEBUG at most.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

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
        importlib.import_module(module_name).register(subparsers)
    for sub in subparsers.choices.values():  # ``streamer transcribe -v`` works as well as ``streamer -v transcribe``
        try:
            sub.add_argument("-v", "--verbose", dest="sub_verbose", action="count", default=0,
                             help="more logging (-vv for debug)")
        except argparse.ArgumentError:
            pass  # the subcommand defines its own -v
    return parser


def log_level(args: argparse.Namespace) -> int:
    """The subcommand's default level (INFO unless it sets ``log_level``), lowered one step per ``-v``."""
    base = getattr(args, "log_level", logging.INFO)
    return max(logging.DEBUG, base - 10 * (args.verbose + getattr(args, "sub_verbose", 0)))


def configure_logging(level: int) -> None:
    """Route our logging to stderr and keep third-party noise out of it unless asked for.

    Above INFO, transformers' and the Hugging Face hub's progress bars ("Loading weights") and
    library warnings (torch/transformers ``FutureWarning``s and the like) are silenced; at INFO
    and below, warnings go through logging like everything else. Environment variables the user
    set themselves are left alone. This runs before any of those libraries is imported.
    """
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.captureWarnings(True)
    if level > logging.INFO:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(log_level(args))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
