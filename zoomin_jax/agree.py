"""Decisions every process takes alike, so that one host's fault stops every process with the same line.

A multi-process run (a pod) meets a collective after most decisions: a barrier, a broadcast, the first train step.
A process that raises alone leaves the others waiting there for ever. So wherever a step may fail on one host only
(the workdir lock, reading a checkpoint's manifest or arrays, its data position, moving a broken step aside), each
process runs it catching what it raises, then every process learns every outcome (`first_failure`: one small
all-gather that every process reaches, whatever happened to it) and all act on the first failure: they raise the
same exception with the same text, naming the process that saw it. With one process it is a plain call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax
import numpy as np

T = TypeVar("T")
_MAX_BYTES = 2048  # one failure's text; longer ones are cut (they are meant to be one line)


def _encode(message: str | None) -> np.ndarray:
    out = np.zeros(_MAX_BYTES + 1, np.uint8)  # [0]: 1 where the process failed; then the UTF-8 text, 0-padded
    if message is not None:
        raw = message.encode()[:_MAX_BYTES]
        out[0] = 1
        out[1:1 + len(raw)] = np.frombuffer(raw, np.uint8)
    return out


def first_failure(message: str | None) -> tuple[int, str] | None:
    """Every process's outcome, shared: call it on every process, with None where all went well.

    Args:
      message: this process's failure, one line, or None.

    Returns:
      (index of the first process that failed, its message), the same on every process; None when none failed.
    """
    if jax.process_count() == 1:
        return None if message is None else (0, message)
    from jax.experimental import multihost_utils

    rows = np.asarray(multihost_utils.process_allgather(_encode(message)))  # (processes, 1 + bytes)
    for index, row in enumerate(rows):
        if row[0]:
            return index, bytes(row[1:]).rstrip(b"\0").decode(errors="replace")
    return None


def where(index: int) -> str:
    """' on process k' in a multi-process run (so every process's line names the one that saw the fault), else ''."""
    return f" on process {index}" if jax.process_count() > 1 else ""


class Failed(Exception):
    """A step failed on some process of a multi-process run; raised alike on every process with that process's
    one-line message (main.py prints it and exits with status 1)."""


def together(fn: Callable[[], T]) -> T:
    """`fn()` on every process, its outcome shared: where it raised on any process of a multi-process run, every
    process raises `Failed` with the first failing process's message and index; with one process, the exception
    itself. For steps whose failure is an ordinary exception (a missing file, an unwritable folder) that precede
    a collective."""
    try:
        result, error = fn(), None
    except Exception as e:  # noqa: BLE001 - shared below, then raised on every process
        if jax.process_count() == 1:
            raise
        result, error = None, e
    failure = first_failure(None if error is None else " ".join(str(error).split()) or type(error).__name__)
    if failure is None:
        return result
    raise Failed(f"{failure[1]}{where(failure[0])}") from error
