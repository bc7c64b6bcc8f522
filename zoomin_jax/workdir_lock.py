"""One run per workdir: `<workdir>/run.lock`, held by the training lead process for the run's lifetime.

Two trainings on one workdir delete each other's checkpoints and write every metric twice, so a second
`--mode=train` is refused at once, before it reads or writes a checkpoint or a metric, with one line naming the
holder (host, pid, start time, command line) and what to do.

The lock is `fcntl.flock` on a descriptor kept open while the run lives. The kernel drops it when the process ends
however it ends (kill -9 included), so a killed run never leaves a stale lock behind: re-running the same command
resumes. The file's content (JSON) only serves the message; it is left in place after the run, emptied, because
deleting a lock file races with a process that has just opened it. flock works on local disks and on NFS (Linux
emulates it with POSIX locks there); remote workdirs (gs://...) have no file locks and are not locked (logged).

Multi-process runs: process 0 alone takes the lock (every host sees the same workdir) and tells the others whether
it got it, so all processes either go on or stop alike. `--mode=eval` takes no lock: reading a running run's
checkpoints is legitimate.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from zoomin_jax import paths

LOCK_FILE = "run.lock"


class WorkdirInUse(RuntimeError):
    """Another live run holds the workdir's lock; main.py prints the message and exits non-zero."""


def _holder(text: str) -> str:
    """'pid 1234 on host h since 21:05:03 (command ...)' from the lock file's JSON, or what is known."""
    try:
        info = json.loads(text)
        return (f"pid {info['pid']} on host {info['host']} since {info['since']} "
                f"(command: {info['command']})")
    except (ValueError, KeyError, TypeError):
        return "another process (it has not written its details yet)"


class WorkdirLock:
    """The lock of one workdir; `acquire` takes it, `release` (or leaving the `with` block) gives it back."""

    def __init__(self):
        self.path: str | None = None
        self._fd: int | None = None

    def acquire(self, workdir: str) -> None:
        """Takes `<workdir>/run.lock` (process 0) and agrees with the other processes on the outcome.

        Raises:
          WorkdirInUse: another live process holds it (on every process alike).
        """
        refusal = None
        if jax.process_index() == 0:
            if paths.is_remote(workdir):
                logging.warning("workdir %s is remote: no file lock, so nothing stops a second run there", workdir)
            else:
                refusal = self._take(os.path.join(workdir, LOCK_FILE), workdir)
        if jax.process_count() > 1:  # all go on or all stop; the holder's details are in process 0's message
            refused = multihost_utils.broadcast_one_to_all(np.int32(refusal is not None))
            if refused and refusal is None:
                refusal = f"workdir {workdir} is in use by another run (process 0 names it); use another --workdir"
        if refusal is not None:
            raise WorkdirInUse(refusal)

    def _take(self, path: str, workdir: str) -> str | None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with os.fdopen(fd) as f:  # closing our descriptor does not touch the holder's lock
                holder = _holder(f.read())
            return f"workdir {workdir} is in use by {holder}; wait for it or use another --workdir"
        previous = os.pread(fd, 4096, 0).decode(errors="replace")
        if previous.strip():  # a run that ended normally empties the file: this one was killed
            logging.info("run.lock: the previous run (%s) ended without releasing it (killed); resuming",
                         _holder(previous))
        info = {"host": socket.gethostname(), "pid": os.getpid(),
                "since": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.path, self._fd = path, fd
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # "ended normally"; the lock itself goes with the descriptor
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
