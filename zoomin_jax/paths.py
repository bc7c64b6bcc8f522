"""Workdir paths: local folders or remote URLs (gs://...), which Orbax and etils write directly."""

from __future__ import annotations

import os

from etils import epath


def is_remote(path: str) -> bool:
    return "://" in str(path)


def resolve(workdir: str) -> str:
    """An absolute local path (with ~ expanded), or a remote URL unchanged."""
    return str(workdir) if is_remote(workdir) else os.path.abspath(os.path.expanduser(workdir))


def join(*parts: str) -> epath.Path:
    """A path object that works for local folders and remote URLs alike."""
    return epath.Path(*[str(p) for p in parts])


def ensure_dir(path) -> epath.Path:
    p = epath.Path(str(path))
    p.mkdir(parents=True, exist_ok=True)
    return p
