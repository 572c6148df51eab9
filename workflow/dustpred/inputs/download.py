"""Resumable, checksummed downloads of the real input products (FITS files over HTTP(S)).

:func:`download` streams a URL to ``<destination>.part`` next to the destination and moves
it into place (``os.replace``) only once it is complete and, when a sha256 is configured,
verified. If ``<destination>.part`` already exists (an interrupted attempt, or a killed job),
the transfer resumes with an HTTP ``Range: bytes=<size>-`` request; a server that ignores
ranges (status 200) makes it start over. Only ``http://`` and ``https://`` URLs are accepted,
and a redirect to any other scheme (``ftp://``, ``file://``) is refused.

A resumed transfer must continue the same file. The first response's ``ETag`` (a strong
one) or else its ``Last-Modified`` is recorded, with the URL, in ``<destination>.part.json``;
a resume sends it as ``If-Range``, so a server whose file changed answers with the whole new
file (status 200), which replaces the ``.part``. A server that ignores ``If-Range`` but
answers 206 with another validator, a ``.part`` without a record (or recorded for another
URL, after a config edit) and a server that gives no validator at all make the download
start over: bytes of two versions are never spliced.

When is the file whole? Every downloaded file must be a complete FITS file by its own
headers (:func:`dustpred.fits.check.structure_problem`), must have the configured ``size``
in bytes when one is given, and the configured sha256 when one is given.

When is a body complete?

- with a length (``Content-Length``, or the total of ``Content-Range``): when the ``.part``
  file has exactly that many bytes; fewer is a lost connection (retried, then resumed);
- with chunked transfer encoding: when the terminating chunk arrived (``http.client`` raises
  ``IncompleteRead`` otherwise, a lost connection);
- with neither (an HTTP/1.0-style body delimited by closing the connection), the end of the
  stream cannot tell a complete body from a connection dropped half-way: both look like a
  clean close. Such a body is taken as a lost connection (retried, resumed) unless it is a
  complete FITS file (:func:`dustpred.fits.check.structure_problem`: every header ends with
  ``END``, every data part announced by ``BITPIX``/``NAXISn``/``PCOUNT``/``GCOUNT`` is there
  with its padding, the size is a whole number of 2,880-byte blocks), or matches the
  configured sha256. A FITS file cut exactly at an HDU boundary would still pass; a
  configured ``size`` or sha256 closes that gap.

Failure modes (every one an :class:`~dustpred.errors.InputError` naming the URL):

- transient (HTTP 408, 429 and 5xx, unreachable host, timeout, connection reset, a body
  shorter than announced or not a complete FITS file as above): the ``.part`` file is kept
  and the request retried ``retries`` times after exponential backoff (``backoff_s``,
  doubling, at most :data:`MAX_BACKOFF_S`), resuming where the server supports ranges. If
  every attempt fails, the error says so and running again resumes.
- a body that is not FITS (the first 2,880-byte block must start with ``SIMPLE  =`` and
  hold 80-character ASCII header cards), e.g. an HTML error page sent with status 200:
  refused before anything is written.
- other HTTP errors (404, 403, ...): refused; an existing ``.part`` is kept.
- a sha256 or ``size`` mismatch, a complete body that is not a complete FITS file, or a
  ``.part`` longer than the file: the ``.part`` is discarded (it cannot be resumed). Bytes
  are also thrown away when a ``.part`` does not start like a FITS file, or cannot be shown
  to be the same file as the server's (above): neither is progress of this product.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from dustpred.atomic import atomic_write
from dustpred.errors import InputError
from dustpred.fits.check import BLOCK_BYTES, header_block_problem, structure_problem

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
RETRIES = 4  # retries after the first attempt, within one call (the rule retries the job too)
BACKOFF_S = 5.0  # wait before the first retry; doubles with each retry
MAX_BACKOFF_S = 300.0
SCHEMES = ("http", "https")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIABLE = re.compile(r"bytes\s+\*/(\d+)")


class _Transient(Exception):
    """A failure another attempt may not repeat (5xx, timeout, reset, short body)."""


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


def _record_path(part: str) -> str:
    return part + ".json"


def _remove_part(part: str) -> None:
    """Remove a ``.part`` file and the record of the file it holds."""
    _remove(part)
    _remove(_record_path(part))


def _validator(response) -> str | None:
    """What identifies the server's version of the file: a strong ETag, else Last-Modified."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):  # a weak ETag may not be used in If-Range
        return etag
    return response.headers.get("Last-Modified") or None


def _recorded_validator(url: str, part: str) -> str | None:
    """The validator recorded for ``part`` when it was started from ``url``, or None."""
    try:
        with open(_record_path(part)) as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("url") != url:
        return None
    return record.get("validator") or None


def _write_record(url: str, response, part: str) -> None:
    record = json.dumps({"url": url, "validator": _validator(response)})
    atomic_write(_record_path(part), lambda tmp: tmp.write_text(record + "\n"))


class _HTTPOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib also follows ``ftp://``)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in SCHEMES:
            raise InputError(
                f"{req.full_url}: HTTP {code} redirects to {newurl}, whose scheme {scheme!r} "
                "is not supported; expected a redirect to an http:// or https:// URL"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HTTPOnlyRedirects)


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


def _first_block(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(BLOCK_BYTES)


def _int_header(response, name: str) -> int | None:
    try:
        return int(response.headers.get(name, ""))
    except ValueError:
        return None


def _open(url: str, start: int, timeout: float, if_range: str | None):
    request = urllib.request.Request(url, headers={"User-Agent": "dustpred-download"})
    if start > 0:
        request.add_header("Range", f"bytes={start}-")
        request.add_header("If-Range", if_range)
    return _OPENER.open(request, timeout=timeout)


def _request(url: str, start: int, timeout: float, target: str, if_range: str | None = None):
    """Open ``url`` from byte ``start`` (``If-Range: if_range``): ``(response, start)``, or
    ``(None, start)`` when a 416 answer says the ``.part`` already holds the whole file."""
    try:
        return _open(url, start, timeout, if_range), start
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and start > 0:
            match = _UNSATISFIABLE.match(exc.headers.get("Content-Range", "") or "")
            if match is not None and int(match.group(1)) == start:
                log.info("%s: %s.part already complete (%d bytes)", url, target, start)
                return None, start
            # The .part is longer than the file (or the server will not say): start over;
            # the .part is replaced only once the new body has passed the FITS check.
            log.warning("%s: range bytes=%d- not satisfiable; starting over", url, start)
            return _request(url, 0, timeout, target)
        if exc.code in (408, 429) or exc.code >= 500:
            raise _Transient(f"HTTP error {exc.code} {exc.reason}") from exc
        raise InputError(
            f"{url}: HTTP error {exc.code} {exc.reason}; expected 200 (or 206 when "
            f"resuming) to download {target}"
        ) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Transient(f"could not connect ({reason})") from exc


def _body_range(url: str, response, start: int) -> tuple[int, int | None, str]:
    """``(start, expected size of the .part at the end or None, file mode)`` of a response."""
    status = response.status
    length = _int_header(response, "Content-Length")
    if status == 206:
        content_range = response.headers.get("Content-Range", "")
        match = _CONTENT_RANGE.match(content_range)
        if match is not None and int(match.group(1)) in (start, 0):
            start = int(match.group(1))  # a server may answer a range with the whole file
            if match.group(3) != "*":
                return start, int(match.group(3)), "ab" if start else "wb"
            return start, None if length is None else start + length, "ab" if start else "wb"
        raise InputError(
            f"{url}: server answered Range bytes={start}- with Content-Range "
            f"{content_range!r}; expected 'bytes {start}-...'"
        )
    if status == 200:
        if start:
            log.info("%s: server ignored the range request; starting over", url)
        return 0, length, "wb"
    raise InputError(f"{url}: HTTP status {status}; expected 200 or 206")


def _check_head(url: str, data: bytes, response, target: str) -> None:
    """Refuse a body whose first block (or as much of it as there is) is not FITS."""
    problem = header_block_problem(data, complete=False)
    if problem is not None:
        content_type = response.headers.get("Content-Type") or "not given"
        raise InputError(
            f"{url}: the body {problem} (Content-Type: {content_type}); expected a FITS "
            f"file, whose first {BLOCK_BYTES}-byte block starts with 'SIMPLE  =' and holds "
            f"80-character ASCII header cards. {target} was not written"
        )


class _Lost(Exception):
    """The connection broke mid-body (``__cause__`` says how)."""


def _chunks(response, chunk_bytes: int):
    """Yield the body in pieces; a broken connection raises :class:`_Lost` after yielding
    the bytes that did arrive (``http.client`` returns those of a chunked body this way)."""
    while True:
        try:
            block = response.read(chunk_bytes)
        except http.client.IncompleteRead as exc:
            yield exc.partial
            raise _Lost() from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _Lost() from exc
        if not block:
            return
        yield block


def _receive(url: str, response, part: str, start: int, mode: str, target: str, chunk_bytes: int):
    """Stream the body into ``part`` (append or overwrite), checking the first block first.

    The file is opened only once the first block has passed :func:`_check_head`, so that an
    HTML page never truncates a ``.part`` file; a fresh ``.part`` gets its record then.
    """
    head = _first_block(part)[:start] if mode == "ab" and start < BLOCK_BYTES else b""
    checked = mode == "ab" and start >= BLOCK_BYTES  # checked when it was written
    held = b""  # body bytes of the first block, held back until it is checked
    done = start
    next_report = done + 64 * chunk_bytes
    fh = None
    try:
        for block in _chunks(response, chunk_bytes):
            if not checked:
                held += block
                if len(head) + len(held) < BLOCK_BYTES:
                    continue
                _check_head(url, head + held, response, target)
                checked, block = True, held
            if fh is None and mode == "wb":
                _write_record(url, response, part)
            fh = fh or open(part, mode)  # noqa: SIM115 (closed in finally)
            fh.write(block)
            done += len(block)
            if done >= next_report:
                log.info("%s: %.1f MB received", url, done / 1e6)
                next_report = done + 64 * chunk_bytes
        if not checked:  # the whole body is shorter than one block: check what there is
            _check_head(url, head + held, response, target)
            if mode == "wb":
                _write_record(url, response, part)
            with open(part, mode) as short:
                short.write(held)
    except _Lost as exc:
        raise _Transient(f"connection lost after {done} bytes ({exc.__cause__!r})") from exc
    finally:
        if fh is not None:
            fh.close()


def _check_end(url: str, part: str, expected: int | None, framed: bool, sha256: str | None):
    """Raise unless ``part`` holds a whole body (module docstring: when is a body complete?)."""
    size = _size(part)
    if expected is not None and size < expected:
        raise _Transient(f"transfer ended at {size} bytes; expected {expected}")
    if expected is not None and size > expected:
        _remove_part(part)
        raise InputError(f"{url}: {part} has {size} bytes; expected {expected}; discarded")
    problem = header_block_problem(_first_block(part))
    if problem is not None:
        raise InputError(f"{url}: {part} {problem}; expected a FITS file")
    if expected is None and not framed:
        problem = structure_problem(part)
        if problem is not None and not (sha256 and _sha_matches(part, sha256)):
            raise _Transient(
                f"the body had no length (it ended when the server closed the connection) "
                f"and {part} {problem}; expected a complete FITS file"
            )


def _resume_from(url: str, part: str) -> tuple[int, str | None]:
    """``(start, If-Range validator)`` of the next request: resume only a ``.part`` whose
    record says which version of ``url`` it holds (module docstring)."""
    start = _size(part)
    if start == 0:
        return 0, None
    validator = _recorded_validator(url, part)
    if validator is None:
        log.warning(
            "%s: %s (%d bytes) has no record of the server's ETag or Last-Modified for "
            "this URL, so it may hold another file; starting over",
            *(url, part, start),
        )
        return 0, None
    return start, validator


def _attempt(url: str, part: str, target: str, *, sha256, timeout, chunk_bytes) -> None:
    """One request: leave a whole body in ``part`` or raise (:class:`_Transient` to retry)."""
    start, if_range = _resume_from(url, part)
    response, start = _request(url, start, timeout, target, if_range)
    if response is None:  # 416: the .part already holds the whole file, of known size
        expected, framed = start, True
    else:
        with response:
            start, expected, mode = _body_range(url, response, start)
            changed = mode == "ab" and _validator(response) != if_range
            if changed:  # the server ignored If-Range: its 206 continues another version
                log.warning(
                    "%s: the server's file changed since %s was started (validator %s, "
                    "recorded %s); discarding it and starting over",
                    *(url, part, _validator(response), if_range),
                )
            else:
                if mode == "ab":
                    log.info("%s: resuming at byte %d", url, start)
                framed = bool(getattr(response, "chunked", False))
                _receive(url, response, part, start, mode, target, chunk_bytes)
        if changed:
            _remove_part(part)
            return _attempt(
                url, part, target, sha256=sha256, timeout=timeout, chunk_bytes=chunk_bytes
            )
    _check_end(url, part, expected, framed, sha256)


def _sha_matches(path: str, sha256: str) -> bool:
    return sha256_of(path).lower() == sha256.strip().lower()


def _discard_foreign_part(url: str, part: str) -> None:
    """Remove a ``.part`` file that does not start like a FITS file: it is not progress."""
    if os.path.exists(part):
        problem = header_block_problem(_first_block(part), complete=False)
        if problem is not None:
            log.warning("%s: %s %s, not FITS; discarding it", url, part, problem)
            _remove_part(part)


def download(
    url: str,
    destination: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    timeout: float = 60.0,
    chunk_bytes: int = CHUNK_BYTES,
    retries: int = RETRIES,
    backoff_s: float = BACKOFF_S,
) -> str:
    """Download the FITS file at ``url`` to ``destination`` (resumable, verified, atomic).

    Parameters
    ----------
    url
        HTTP(S) URL.
    destination
        Final path; its directory is created.
    sha256
        Expected hex digest (case-insensitive), or None to skip the check.
    size
        Expected size in bytes, or None to skip the check.
    timeout
        Socket timeout in seconds (connect and each read).
    chunk_bytes
        Bytes read per call from the connection.
    retries
        Further attempts after a transient failure (module docstring), each resuming.
    backoff_s
        Seconds before the first retry; doubles with each retry, at most MAX_BACKOFF_S.

    Returns
    -------
    str
        ``destination``.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise InputError(
            f"{url}: URL scheme {scheme or '(none)'!r} is not supported; expected an "
            f"http:// or https:// URL"
        )
    destination = os.fspath(destination)
    os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
    part = destination + ".part"
    _discard_foreign_part(url, part)
    t0 = time.monotonic()
    for attempt in range(retries + 1):
        try:
            _attempt(
                url, part, destination, sha256=sha256, timeout=timeout, chunk_bytes=chunk_bytes
            )
            break
        except _Transient as exc:
            if attempt == retries:
                kept = (
                    f"partial file kept at {part} ({_size(part)} bytes): run again to resume"
                    if os.path.exists(part)
                    else f"{destination} was not written"
                )
                raise InputError(
                    f"{url}: {exc}; gave up after {retries + 1} attempt(s), {kept}"
                ) from exc
            wait = min(backoff_s * 2**attempt, MAX_BACKOFF_S)
            kept = f"{_size(part)} bytes kept in {part}" if os.path.exists(part) else "no bytes yet"
            log.warning(
                "%s: %s; %s; retry %d of %d in %.1f s", url, exc, kept, attempt + 1, retries, wait
            )
            time.sleep(wait)
    _verify(url, part, destination, sha256=sha256, size=size, chunk_bytes=chunk_bytes)
    os.replace(part, destination)
    _remove(_record_path(part))
    log.info(
        "%s -> %s (%d bytes, %.1f s)", url, destination, _size(destination), time.monotonic() - t0
    )
    return destination


def _verify(url: str, part: str, destination: str, *, sha256, size, chunk_bytes) -> None:
    """Refuse, and discard, a whole body that is not the configured file (module docstring)."""
    problem = None
    if size is not None and _size(part) != size:
        problem = f"has {_size(part)} bytes; expected {size} (config 'size')"
    if problem is None:
        fits_problem = structure_problem(part)
        if fits_problem is not None:
            problem = f"{fits_problem}; expected a complete FITS file"
    if problem is None and sha256:
        found = sha256_of(part, chunk_bytes)
        if found.lower() != sha256.strip().lower():
            problem = f"has sha256 {found}; expected {sha256} (config 'sha256')"
    if problem is not None:
        _remove_part(part)
        raise InputError(
            f"{url}: the downloaded file {problem}. {destination} was not written; the "
            "partial file was discarded"
        )


def main(argv: list[str] | None = None) -> None:
    """Print the ``sha256`` and ``size`` config lines of downloaded files (first download).

    ``python -m dustpred.inputs.download resources/download/*.fits``; paste each pair under
    the file's entry of config ``download``, so later downloads are checked against them.
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="downloaded files")
    for path in parser.parse_args(argv).files:
        print(f"# {path}\nsha256: {sha256_of(path)}\nsize: {os.path.getsize(path)}")


if __name__ == "__main__":
    main()
