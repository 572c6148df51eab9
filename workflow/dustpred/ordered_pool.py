"""Run a function over a stream of items in a thread pool and get the results in order.

The library's heavy loops (FFTs, BLAS, ducc0 transforms, numpy ufuncs) release the GIL, so
threads run them in parallel. :func:`map_in_order` keeps at most ``workers + 1`` items in
flight (bounded memory for chunks of cutouts or blocks of pixels) and yields the results in
the items' order, so sums and files built from them do not depend on ``workers``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_in_order(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``fn(item)`` for each item of ``items``, in order, ``workers`` (>= 1) at a time.

    ``items`` is consumed lazily: an item is drawn only when fewer than ``workers + 1`` are
    in flight. With ``workers`` <= 1 the calls still run in one worker thread, one at a time.
    """
    workers = max(1, int(workers))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
