"""`fn` over items on a thread pool, results in input order with a bounded number in flight: the builders decode
photographs with it and predict prepares them (PIL, OpenCV and hashing release the GIL, so threads scale without
the pickling and fork hazards of processes)."""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 1,
                window: int | None = None) -> Iterator[Any]:
    """fn(item) for each item, in input order.

    Args:
      workers: threads; 1 or fewer runs in the caller's thread.
      window: at most this many items submitted ahead (default 4 per worker), so memory stays bounded.
    """
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    window = window or 4 * workers
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
