"""``streamer bench {engine,align,stream,load,soak,text}``: every speed or quality claim comes from one of these.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. They are imported only when their subcommand runs, so one missing or
broken benchmark fails alone, with a message, instead of breaking ``streamer --help``.
"""

from __future__ import annotations

import argparse
import importlib
import logging

log = logging.getLogger(__name__)

BENCHES = {
    "engine": ("streamer.bench.engine", "offline decode speed and accuracy of the engine"),
    "align": ("streamer.bench.align", "accuracy of word times against sentence boundaries"),
    "stream": ("streamer.bench.stream", "streaming quality and latency of one real-time stream"),
    "load": ("streamer.bench.load", "N concurrent real-time clients against the daemon"),
    "soak": ("streamer.bench.soak", "a daemon under clients joining and leaving: memory, fds, threads, tasks"),
    "text": ("streamer.bench.text", "committed text against an offline decode: case, breaks, characters, language"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks (engine, align, stream, load, soak, text)",
                                   description="Benchmarks that print medians and the machine they ran on.")
    benches = parser.add_subparsers(dest="bench", metavar="BENCH")
    for name, (module, help_text) in BENCHES.items():
        # "+" as the only prefix: every flag (even --help) is passed through to the module's own parser.
        sub = benches.add_parser(name, help=help_text, add_help=False, prefix_chars="+")
        sub.add_argument("bench_args", nargs=argparse.REMAINDER)
        sub.set_defaults(func=_runner(name, module, help_text))
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _runner(name: str, module_name: str, help_text: str):
    def run(args: argparse.Namespace) -> int:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a missing or broken bench only breaks its own subcommand
            log.error("benchmark %r is not available (%s: %s)", name, type(exc).__name__, exc)
            return 2
        parser = argparse.ArgumentParser(prog=f"streamer bench {name}", description=help_text)
        module.add_arguments(parser)
        return int(module.run(parser.parse_args(args.bench_args)) or 0)

    return run
