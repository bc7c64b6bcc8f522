"""One run per workdir: `<workdir>/run.lock`, held by the training lead process for the run's lifetime.

Two trainings on one workdir delete each other's checkpoints and write every metric twice, so a second
`--mode=train` is refused at once, before it reads or writes a checkpoint or a metric, with one line naming the
holder (host, pid, start time, command line) and what to do.

The lock is `fcntl.flock` on a descriptor kept open while the run lives. The kernel drops it when the process ends
however it ends (kill -9 included), so a killed run never leaves a stale lock behind: re-running the same command
resumes. The file's content (JSON) only serves the message; it is left in place after the run, emptied, because
deleting a lock file races with a process that has just opened it. flock works on local disks and on NFS (Linux
emulates it with POSIX locks there); remote workdirs (gs://...) have no file locks and are not locked (logged).

Multi-process runs: process 0 alone takes the lock (every host sees the same workdir) and tells the others the
outcome (`agree.py`), so all processes either go on or stop alike, with process 0's line: a lock that cannot be
taken at all (a file system without locks, an unwritable folder) stops every process, never only process 0.
`--mode=eval` takes no lock: reading a running run's checkpoints is legitimate.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys

import jax
from absl import logging

from zoomin_jax import agree, paths

LOCK_FILE = "run.lock"


class WorkdirInUse(RuntimeError):
    """Another live run holds the workdir's lock, or it cannot be taken; main.py prints the message and exits 1."""


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
                path = os.path.join(workdir, LOCK_FILE)
                try:
                    refusal = self._take(path, workdir)
                except OSError as e:  # e.g. ENOLCK: a network file system without locks
                    refusal = (f"cannot lock {path} ({e.strerror or e}): this file system may not support file locks "
                               "(some network file systems); use a --workdir on one that does (a local disk)")
        failure = agree.first_failure(refusal)  # all go on or all stop, with process 0's line
        if failure is not None:
            raise WorkdirInUse(failure[1])

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
