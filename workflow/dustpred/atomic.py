"""Atomic outputs: every file is written under a temporary name and renamed when complete.

A killed or failed job therefore never leaves a complete-looking but partial output; at most a
hidden ``.name.<pid>.<random>.tmp`` file next to it (a killed job cannot clean up). The next
write of the same output removes such leftovers first: Snakemake lets one job at a time write
an output (its directory lock), so any temporary of that output found then is stale. At the
paper's scale they are gigabytes (a stack or a shard).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the ``.name.*.tmp`` files a killed writer of ``path`` left; returns them."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
    for tmp in stale:
        log.info("removing %s, left by an earlier job that did not finish", tmp)
        tmp.unlink(missing_ok=True)
    return stale


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    The parent directory is created. The writer creates the temporary file itself, so it gets
    the usual permissions (umask), and the temporary file is removed if the block fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` under :func:`atomic_path` (e.g. ``lambda p: table.to_csv(p)``)."""
    with atomic_path(path) as tmp:
        write(tmp)
