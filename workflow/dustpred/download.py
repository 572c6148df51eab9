"""Resumable, checksummed downloads of the real input products.

:func:`download` streams a URL to ``<destination>.part`` next to the destination and moves
it into place (``os.replace``) only once it is complete and, when a sha256 is configured,
verified. If ``<destination>.part`` already exists (an interrupted earlier attempt), the
transfer resumes with an HTTP ``Range: bytes=<size>-`` request; a server that ignores
ranges (status 200) makes it start over.

Failure modes:

- HTTP error status, unreachable host: :class:`~dustpred.errors.InputError` naming the URL;
  neither the destination nor the ``.part`` file is left behind.
- connection lost mid-transfer: InputError saying so; the ``.part`` file is kept so that
  running again resumes (it is never mistaken for the product: the destination does not
  exist until verification).
- size or sha256 mismatch: InputError naming URL, file, found and expected; nothing is left
  behind (a corrupt ``.part`` cannot be resumed).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request

from dustpred.errors import InputError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def sha256_of(path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "dustpred-download"})
    if start > 0:
        request.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (URLs from config)


def download(
    url: str,
    destination: str | os.PathLike,
    *,
    sha256: str | None = None,
    timeout: float = 60.0,
    chunk_bytes: int = CHUNK_BYTES,
) -> str:
    """Download ``url`` to ``destination`` (resumable, verified, atomic).

    Parameters
    ----------
    url
        HTTP(S) URL.
    destination
        Final path; its directory is created.
    sha256
        Expected hex digest (case-insensitive), or None to skip the check.
    timeout
        Socket timeout in seconds.

    Returns
    -------
    str
        ``destination``.
    """
    destination = os.fspath(destination)
    os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
    part = destination + ".part"
    start = os.path.getsize(part) if os.path.exists(part) else 0
    t0 = time.monotonic()
    try:
        response = _open(url, start, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start > 0:
            # Range not satisfiable: either the .part already holds the whole file
            # (Content-Range 'bytes */<start>') or it is longer than the file: start over.
            match = re.match(r"bytes\s+\*/(\d+)", exc.headers.get("Content-Range", "") or "")
            if match is None or int(match.group(1)) != start:
                _remove(part)
                return download(
                    url, destination, sha256=sha256, timeout=timeout, chunk_bytes=chunk_bytes
                )
            total = start
            log.info("%s: %s already complete (%d bytes)", url, part, start)
            response = None
        else:
            _remove(part)
            raise InputError(
                f"{url}: HTTP error {exc.code} {exc.reason}; expected 200 (or 206 when "
                f"resuming) to download {destination}"
            ) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise InputError(
            f"{url}: could not connect ({exc}); expected a reachable server to download "
            f"{destination}"
        ) from exc

    if response is not None:
        with response:
            status = response.status
            total = None
            if status == 206:
                match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if match is None or int(match.group(1)) != start:
                    _remove(part)
                    raise InputError(
                        f"{url}: server answered Range bytes={start}- with Content-Range "
                        f"{response.headers.get('Content-Range')!r}; expected 'bytes {start}-...'"
                    )
                total = None if match.group(3) == "*" else int(match.group(3))
                mode = "ab"
                log.info("%s: resuming at byte %d", url, start)
            elif status == 200:
                length = response.headers.get("Content-Length")
                total = int(length) if length is not None else None
                mode = "wb"
                if start:
                    log.info("%s: server ignored the range request; starting over", url)
                start = 0
            else:
                _remove(part)
                raise InputError(f"{url}: HTTP status {status}; expected 200 or 206")
            done = start
            next_report = done + 64 * chunk_bytes
            try:
                with open(part, mode) as fh:
                    while True:
                        block = response.read(chunk_bytes)
                        if not block:
                            break
                        fh.write(block)
                        done += len(block)
                        if done >= next_report:
                            log.info(
                                "%s: %.1f MB of %s",
                                url,
                                done / 1e6,
                                f"{total / 1e6:.1f} MB" if total else "?",
                            )
                            next_report = done + 64 * chunk_bytes
            except (OSError, http.client.HTTPException) as exc:
                raise InputError(
                    f"{url}: connection lost after {done} bytes ({exc}); partial file kept "
                    f"at {part}: run again to resume"
                ) from exc
    size = os.path.getsize(part)
    if total is not None and size != total:
        if size < total:
            raise InputError(
                f"{url}: transfer ended at {size} bytes; expected {total}. Partial file kept "
                f"at {part}: run again to resume"
            )
        _remove(part)
        raise InputError(f"{url}: {part} has {size} bytes; expected {total}")
    if sha256:
        found = sha256_of(part, chunk_bytes)
        if found.lower() != sha256.strip().lower():
            _remove(part)
            raise InputError(
                f"{url}: sha256 of the downloaded file is {found}; expected {sha256} "
                f"(config). {destination} was not written"
            )
    os.replace(part, destination)
    log.info("%s -> %s (%d bytes, %.1f s)", url, destination, size, time.monotonic() - t0)
    return destination
