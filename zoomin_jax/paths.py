"""Workdir paths: local folders or remote URLs (gs://...), which Orbax and etils write directly.

Also the storage checks that make a read-only, non-creatable or full workdir stop with one line naming the path
(`StorageError`, which main.py prints without a traceback) instead of a raw `OSError` or an Orbax error after a
whole stage has trained.
"""

from __future__ import annotations

import os
import shutil

from etils import epath


class StorageError(OSError):
    """A folder that cannot be created or written, or too little free space for a save. The message is one line
    naming the path (and the free space where it is known); main.py prints it and exits with status 1."""


def is_remote(path: str) -> bool:
    return "://" in str(path)


def resolve(workdir: str) -> str:
    """An absolute local path (with ~ expanded), or a remote URL unchanged."""
    return str(workdir) if is_remote(workdir) else os.path.abspath(os.path.expanduser(workdir))


def join(*parts: str) -> epath.Path:
    """A path object that works for local folders and remote URLs alike."""
    return epath.Path(*[str(p) for p in parts])


def free_bytes(path) -> int | None:
    """Free space (bytes usable by this user) on the file system holding `path` or its nearest existing parent;
    None for remote URLs, whose space is not ours to measure."""
    if is_remote(path):
        return None
    p = os.path.abspath(str(path))
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _free_note(path) -> str:
    free = free_bytes(path)
    return "" if free is None else f"; {human_bytes(free)} free there"


def ensure_dir(path) -> epath.Path:
    """Creates `path` (and parents) and checks that a file can be created in it, so that a read-only or
    non-creatable workdir stops here, naming the path, before data preparation, compiling or training.

    Raises:
      StorageError: the folder cannot be created, or nothing can be written in it (read-only mount, permissions,
        a full disk, a file in the way).
    """
    p = epath.Path(str(path))
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create the folder {p}: {e.strerror or e}{_free_note(p)}") from None
    probe = p / f".zoomin_write_probe.{os.getpid()}"
    try:  # os.access is not enough: root passes it on read-only mounts, and it knows nothing of a full disk
        probe.write_text("probe")
        probe.unlink()
    except OSError as e:
        raise StorageError(f"cannot write in the folder {p}: {e.strerror or e}{_free_note(p)}") from None
    return p
