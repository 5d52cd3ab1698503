"""torch's intra-op thread count, per OS thread: the VAD on one thread, the model on all of them.

silero-vad steps a small recurrent network over 512-sample windows. Spread over two threads
each step costs 1.94 ms instead of 0.62 ms on one (this project's 2-core machine), time taken
from the cores while a decode runs on another OS thread (the daemon's engine worker). So the VAD runs
single-threaded (:func:`one_thread`), and the model's worker threads pin their own count when
they start (:func:`pin_threads`).

With OpenMP, ``torch.set_num_threads`` sets the calling OS thread's count, and also the value a
*new* thread adopts at its first torch call. A worker that started while the VAD held the count
at 1 would keep 1 for good; :func:`pin_threads` makes that first call and then sets the count.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


def current_threads() -> int:
    import torch

    return torch.get_num_threads()


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block's torch ops on the calling thread alone, then restore its count."""
    import torch

    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def pin_threads(threads: int) -> None:
    """In a worker thread's initializer: use ``threads`` intra-op threads from its first torch op on."""
    import torch

    torch.get_num_threads()  # the thread's first call: it adopts the process-wide value (maybe a VAD's 1)
    torch.set_num_threads(threads)
