"""Coordinated preemption: every process stops at the same check point, so all of them save the same step.

A scheduler's SIGTERM ("you will be stopped soon") may reach the hosts of a pod at different moments, or only one of
them. If each process stopped at the first step after its own signal, the hosts would call Orbax's save (which has
barriers across processes) at different steps and hang there until killed. So the decision to stop is taken
together:

- Under `jax.distributed` (any process count): JAX's preemption sync manager. `jax.distributed.initialize` installs
  a C++ SIGTERM handler; a listener thread (polling once a second) tells the coordination service, which tells every
  process; each one uploads how many checks it has made, and all agree to stop at the check after the fastest
  one's (max + 1). `check()` is then a local comparison (~0.4 us), no collective. A SIGTERM to one host suffices.
  No Python SIGTERM handler is installed here: it would replace the C++ one and JAX would never hear of the signal.
- One process without `jax.distributed`: a Python SIGTERM handler sets a flag that `check()` reads.
- Several processes without the sync manager (`jax_enable_preemption_service=False`): the flag is all-gathered at
  every check (a collective, ~6 ms on CPU), so the processes still agree.

Every process must call `check()` at the same points of the same loop (train steps, eval batches, stage
boundaries): the sync manager counts calls, and the counts must match across processes.

Compiling a stage's train step (tens of seconds on CPU, minutes at paper scale) is no loop, so `compile_promptly`
compiles ahead of time in a worker thread while the main thread polls the flag every `POLL_S`: one process without
`jax.distributed` then stops within a fraction of a second of SIGTERM, even mid-compile; the abandoned compile is
a daemon thread and `exit_preempted` leaves with `os._exit`, so it cannot hold the process. With several processes
or the sync manager the compile stays in the main thread: the check is a collective (or a counted sync point) that
must happen at identical points on every process, and a process that left mid-compile would leave the others
waiting in it. There SIGTERM is acted on at the first check after the compile (after the stage's first step).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

# sysexits.h EX_TEMPFAIL: "temporary failure, re-run later". A preempted run saved its last completed step (or had
# nothing new to save) and resumes when the same command is run again; 0 means the run finished.
EXIT_PREEMPTED = 75
POLL_S = 0.2  # how often the main thread looks at the SIGTERM flag while a worker thread compiles


class Preempted(Exception):
    """Raised by the trainer / evaluator at an agreed check point after SIGTERM; main.py exits with EXIT_PREEMPTED."""

    def __init__(self, message: str, saved_step: int | None = None):
        super().__init__(message)
        self.saved_step = saved_step


def _sync_manager():
    from jax._src import distributed  # jax.distributed's state: no public accessor for the sync manager

    state = distributed.global_state
    return state.preemption_sync_manager if state.client is not None else None


class Preemption:
    """Agreed-upon SIGTERM checks; use as a context manager so a Python handler is removed afterwards."""

    def __init__(self):
        self.checks = 0
        self.requested = False  # this process saw SIGTERM (Python handler only)
        self._installed, self._previous = False, None
        self._coordinated = _sync_manager() is not None
        if not self._coordinated:
            try:
                self._previous = signal.signal(signal.SIGTERM, self._handle)
                self._installed = True
            except ValueError:  # not the main thread (e.g. some test runners): no handler
                pass

    @property
    def coordinated(self) -> bool:
        """JAX's preemption sync manager decides (under `jax.distributed`), not this process's flag."""
        return self._coordinated

    @property
    def mechanism(self) -> str:
        if self._coordinated:
            return "jax preemption sync manager"
        return "SIGTERM flag, all-gathered" if jax.process_count() > 1 else "SIGTERM flag"

    def _handle(self, signum, frame):
        logging.warning("SIGTERM: stopping at the next check point (saving the last completed training step)")
        self.requested = True

    def check(self) -> bool:
        """True on every process at the same call once a SIGTERM reached any of them. Call it everywhere alike."""
        self.checks += 1
        if self._coordinated:
            return bool(multihost_utils.reached_preemption_sync_point(self.checks))
        if jax.process_count() > 1:
            return bool(np.asarray(multihost_utils.process_allgather(np.int32(self.requested))).any())
        return self.requested

    def close(self) -> None:
        if self._installed:  # None: the previous handler was not set from Python; the default is the best guess
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous)
            self._installed = False

    def __enter__(self) -> Preemption:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def compile_promptly(jitted, args: tuple, preempt: Preemption, what: str) -> Any:
    """Compiles `jitted` for `args` (filling jit's own cache, so calling `jitted(*args)` then runs at once).

    One process without the sync manager: in a daemon thread, the main thread polling `preempt.requested` every
    `POLL_S`. Otherwise in place (see the module docstring).

    Returns:
      The compiled executable (None for a callable without `.lower`, which then compiles at its first call).

    Raises:
      Preempted: SIGTERM arrived while compiling (one process only); the compile is abandoned.
    """
    if not hasattr(jitted, "lower"):  # not a jit function (a test's wrapper, say): it compiles at its first call
        return None
    if preempt.coordinated or jax.process_count() > 1:
        return jitted.lower(*args).compile()
    out: dict[str, Any] = {}

    def work():
        try:
            out["compiled"] = jitted.lower(*args).compile()
        except BaseException as e:  # re-raised in the main thread
            out["error"] = e

    start = time.perf_counter()
    worker = threading.Thread(target=work, name=f"compile {what}", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(POLL_S)
        if preempt.requested:
            raise Preempted(f"SIGTERM while compiling {what} ({time.perf_counter() - start:.1f} s in)")
    if "error" in out:
        raise out["error"]
    logging.info("compiled %s in %.1f s", what, time.perf_counter() - start)
    return out["compiled"]


def abandoned_compiles() -> list[str]:
    """Names of compile threads still running (left behind by a `Preempted` from `compile_promptly`)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("compile ") and t.is_alive()]


def exit_preempted() -> None:
    """Exits with EXIT_PREEMPTED; through `os._exit` when a compile was abandoned, after flushing the output.

    An XLA compile in a daemon thread may still hold native resources at interpreter shutdown (and atexit hooks
    may wait on them); `os._exit` ends the process at once. Checkpoints are already committed by then
    (`Checkpointer.close` runs in the trainer's `finally`).
    """
    if abandoned_compiles():
        logging.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_PREEMPTED)
    sys.exit(EXIT_PREEMPTED)
