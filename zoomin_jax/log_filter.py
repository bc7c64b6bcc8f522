"""Readable output: the project's own log lines and every library's warnings, not the libraries' INFO chatter.

A default run logged ~1,900 lines, ~1,600 of them Orbax's INFO records of its own internals (atomic renames, array
handlers, async I/O). `quiet_libraries` installs a filter on absl's handler (which also receives the standard
`logging` records of JAX and the other libraries once absl's app has started): records at WARNING and above pass,
and INFO / DEBUG records pass only when they come from this package. `--library_logs` on the command line leaves
everything as it was.
"""

from __future__ import annotations

import logging
import os

from absl import logging as absl_logging

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class QuietLibraries(logging.Filter):
    """Passes records at WARNING and above, and records logged from a file under this package."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or os.path.abspath(record.pathname).startswith(_PACKAGE)


def quiet_libraries() -> None:
    """Installs `QuietLibraries` on absl's handler (idempotent)."""
    handler = absl_logging.get_absl_handler()
    if not any(isinstance(f, QuietLibraries) for f in handler.filters):
        handler.addFilter(QuietLibraries())
