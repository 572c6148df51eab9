"""Byte-level checks that a file is (the start of) a complete FITS file, without astropy.

Used by :mod:`dustpred.inputs.download` to refuse a body that is not FITS (an HTML error page sent
with status 200, a gzip file) and to tell a complete close-delimited body from a truncated
one. Both functions return a phrase saying what was found ("starts with '<!DOCTYPE html>'"),
or None when the bytes are fine; the caller names the URL or file.

The rules are those of the FITS standard 4.0: a file is a sequence of HDUs, each a header of
80-character ASCII cards ending with an ``END`` card and padded to whole 2,880-byte blocks,
followed by ``|BITPIX|/8 * GCOUNT * (PCOUNT + NAXIS1 * ... * NAXISn)`` data bytes, padded to
whole blocks (for random groups, ``NAXIS1 = 0`` is left out of the product). The first HDU
starts with ``SIMPLE  =``, the others with ``XTENSION=``.
"""

from __future__ import annotations

import math
import os
import re

BLOCK_BYTES = 2880
CARD_BYTES = 80
SIGNATURE = b"SIMPLE  ="
_KEYWORD = re.compile(rb"[A-Z0-9_-]* *")  # left-justified, upper case, blank-padded
_GZIP_MAGIC = b"\x1f\x8b"


def _describe_start(data: bytes) -> str:
    """'starts with ...' for a byte string that is not a FITS signature."""
    if not data:
        return "is empty"
    if data.startswith(_GZIP_MAGIC):
        return "starts with the gzip magic bytes 1f 8b (a compressed file)"
    first_line = data[:40].split(b"\n")[0].decode("ascii", "backslashreplace")
    return f"starts with {first_line!r}"


def header_block_problem(data: bytes, *, complete: bool = True) -> str | None:
    """What is wrong with the first 2,880-byte block of a file, or None.

    Parameters
    ----------
    data
        The first bytes of the file: the whole first block (longer input is cut to it) or,
        with ``complete=False``, however much of it has arrived so far.
    complete
        True: ``data`` must hold the whole block. False: check only the bytes given.

    Returns
    -------
    str or None
        A phrase for the message ("starts with '<!DOCTYPE html>'", "has a non-ASCII byte
        0x89 in header card 3", "is only 100 bytes long"), or None.
    """
    data = data[:BLOCK_BYTES]
    if not data.startswith(SIGNATURE[: len(data)]) or not data:
        return _describe_start(data)
    for index in range(0, len(data), CARD_BYTES):
        card = data[index : index + CARD_BYTES]
        bad = next((byte for byte in card if not 0x20 <= byte <= 0x7E), None)
        if bad is not None:
            return f"has a non-ASCII byte 0x{bad:02x} in header card {index // CARD_BYTES + 1}"
        keyword = card[:8]
        if len(keyword) == 8 and not _KEYWORD.fullmatch(keyword):
            return (
                f"has header card {index // CARD_BYTES + 1} with an invalid keyword "
                f"{keyword.decode('ascii')!r}"
            )
    if complete and len(data) < BLOCK_BYTES:
        return f"is only {len(data)} bytes long (a FITS header block is {BLOCK_BYTES})"
    return None


def _read_header(fh, offset: int) -> tuple[dict[str, str], int] | None:
    """Cards (keyword -> raw value text) of the header at ``offset`` and its length in bytes.

    None when the file ends before the ``END`` card (or inside its padding block).
    """
    cards: dict[str, str] = {}
    fh.seek(offset)
    length = 0
    while True:
        block = fh.read(BLOCK_BYTES)
        if len(block) < BLOCK_BYTES:
            return None
        length += BLOCK_BYTES
        for index in range(0, BLOCK_BYTES, CARD_BYTES):
            card = block[index : index + CARD_BYTES].decode("ascii", "replace")
            keyword = card[:8].rstrip()
            if keyword == "END":
                return cards, length
            if card[8:10] == "= " and keyword not in cards:
                cards[keyword] = card[10:].split("/")[0].strip()


def _data_bytes(cards: dict[str, str]) -> int:
    """Bytes of data the header announces (before padding); ValueError on a bad value."""
    bitpix = int(cards["BITPIX"])
    naxes = [int(cards[f"NAXIS{i}"]) for i in range(1, int(cards["NAXIS"]) + 1)]
    if not naxes:
        return 0
    if naxes[0] == 0 and cards.get("GROUPS") == "T":  # random groups: NAXIS1 = 0 is a marker
        naxes = naxes[1:]
    pcount = int(cards.get("PCOUNT", "0"))
    gcount = int(cards.get("GCOUNT", "1"))
    return abs(bitpix) // 8 * gcount * (pcount + math.prod(naxes))


def structure_problem(path: str | os.PathLike) -> str | None:
    """What shows that a file is not a complete FITS file, or None.

    Walks the HDUs by their headers (the data is skipped, not read): every header must end
    with ``END``, every data part must be there in full with its padding, the file must end
    exactly after the last HDU, and there must be some data.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    str or None
        A phrase for the message ("ends inside the data of HDU 1: its header announces
        1048576 bytes, 349525 are there"), or None.
    """
    size = os.path.getsize(path)
    offset = 0
    hdu = 0
    data_total = 0
    with open(path, "rb") as fh:
        first = header_block_problem(fh.read(BLOCK_BYTES))
        if first is not None:
            return first
        while offset < size:
            fh.seek(offset)
            if hdu > 0 and fh.read(9) != b"XTENSION=":
                return f"has {size - offset} bytes after HDU {hdu - 1} that are not an extension"
            header = _read_header(fh, offset)
            if header is None:
                return f"ends inside the header of HDU {hdu} (no END card before byte {size})"
            cards, header_bytes = header
            try:
                data_bytes = _data_bytes(cards)
            except (KeyError, ValueError) as exc:
                return f"has HDU {hdu} with a missing or bad BITPIX/NAXISn/PCOUNT/GCOUNT ({exc})"
            data_start = offset + header_bytes
            offset = data_start + math.ceil(data_bytes / BLOCK_BYTES) * BLOCK_BYTES
            if data_start + data_bytes > size:
                return (
                    f"ends inside the data of HDU {hdu}: its header announces {data_bytes} "
                    f"bytes, {size - data_start} are there"
                )
            if offset > size:
                return (
                    f"ends inside the padding of HDU {hdu} ({size} bytes, not a multiple of "
                    f"{BLOCK_BYTES})"
                )
            data_total += data_bytes
            hdu += 1
    if data_total == 0:
        return f"has no data ({hdu} HDU(s), all empty)"
    return None
