"""dustpred.inputs.download against a local HTTP server on 127.0.0.1 (ranges, faults, non-FITS)."""

import hashlib
import http.server
import io
import re
import threading
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from astropy.io import fits

from dustpred.errors import InputError
from dustpred.inputs.download import download, main, sha256_of

FAST = {"backoff_s": 0.001}  # retries without waiting
SCHEMA = Path(__file__).parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def _card(keyword: str, value) -> bytes:
    text = f"{value:<20}" if isinstance(value, str) and value.startswith("'") else f"{value:>20}"
    return f"{keyword:<8}= {text}".ljust(80).encode("ascii")


def _header(*cards: bytes) -> bytes:
    raw = b"".join(cards) + b"END".ljust(80)
    return raw + b" " * (-len(raw) % 2880)


DATA = bytes(range(256)) * 4096  # 1 MiB, not all one byte
PAYLOAD = (
    _header(_card("SIMPLE", "T"), _card("BITPIX", 8), _card("NAXIS", 0), _card("EXTEND", "T"))
    + _header(
        _card("XTENSION", "'IMAGE   '"),
        _card("BITPIX", 8),
        _card("NAXIS", 1),
        _card("NAXIS1", len(DATA)),
        _card("PCOUNT", 0),
        _card("GCOUNT", 1),
    )
    + DATA
    + b"\0" * (-len(DATA) % 2880)
)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
HTML = b"<!DOCTYPE html>\n<html><body>Service temporarily moved</body></html>\n"


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.payload`` (PAYLOAD) at /file.fits with Range and If-Range support.

    The file's validator is ``server.etag`` (sent as ETag, or as Last-Modified when
    ``server.validator`` is "last-modified", or not at all when it is None); a request whose
    If-Range differs gets the whole file unless ``server.honour_if_range`` is False.

    Each request takes its mode from ``server.faults`` (first entry, consumed) or else
    ``server.mode``: "normal"; "short" (announces Content-Length, sends a third, closes);
    "nolength" / "nolength-drop" (HTTP/1.0 body without length, whole or a third, ranges
    ignored); "chunked-drop" (HTTP/1.1 chunked, closed before the terminating chunk); "503";
    "html" (an error page with status 200); "ignore-range" (always 200 and the whole file).
    """

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        server = self.server
        mode = server.faults.pop(0) if server.faults else server.mode
        server.requests.append((self.path, self.headers.get("Range")))
        server.if_ranges.append(self.headers.get("If-Range"))
        if self.path == "/moved.fits" and server.redirect:
            self.send_response(302)
            self.send_header("Location", server.redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path != "/file.fits":
            self.send_error(404, "Not Found")
        elif mode == "503":
            self.send_error(503, "Service Unavailable")
        elif mode == "html":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(HTML)))
            self.end_headers()
            self.wfile.write(HTML)
        else:
            self._send_payload(mode)

    def _send_validator(self):
        if self.server.validator == "etag":
            self.send_header("ETag", self.server.etag)
        elif self.server.validator == "last-modified":
            self.send_header("Last-Modified", self.server.etag)

    def _send_payload(self, mode):
        server, start = self.server, 0
        payload = server.payload
        match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        same = self.headers.get("If-Range") in (None, server.etag) or not server.honour_if_range
        if match and same and mode not in ("ignore-range", "nolength", "nolength-drop"):
            start = int(match.group(1))
        if mode == "chunked-drop":
            self.protocol_version = "HTTP/1.1"
        if start >= len(payload):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(payload)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        else:
            self.send_response(200)
        self._send_validator()
        body = payload[start:]
        if mode == "chunked-drop":
            self.send_header("Transfer-Encoding", "chunked")
        elif not mode.startswith("nolength"):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        sent = (
            body[: len(body) // 3] if mode in ("short", "nolength-drop", "chunked-drop") else body
        )
        if mode == "chunked-drop":  # one chunk, then close without the '0' chunk
            sent = f"{len(sent):x}\r\n".encode() + sent + b"\r\n"
        self.wfile.write(sent)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.mode = "normal"
    httpd.faults = []
    httpd.requests = []
    httpd.if_ranges = []
    httpd.redirect = None
    httpd.payload, httpd.etag, httpd.validator, httpd.honour_if_range = (
        PAYLOAD,
        '"v1"',
        "etag",
        True,
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


CUT = len(PAYLOAD) // 3  # bytes in the .part left by an interrupted download


def _interrupt(server, dest):
    """Leave ``dest.part`` as a download cut after CUT bytes leaves it; clear the log."""
    server.faults = ["short"]
    with pytest.raises(InputError, match="transfer ended"):
        download(f"{server.url}/file.fits", dest, retries=0)
    server.requests.clear()
    server.if_ranges.clear()
    return Path(f"{dest}.part")


def test_test_payload_is_a_fits_file_astropy_reads():
    with fits.open(io.BytesIO(PAYLOAD)) as hdul:
        assert len(hdul) == 2
        np.testing.assert_array_equal(hdul[1].data, np.frombuffer(DATA, np.uint8))


def test_downloads_whole_file(server, tmp_path):
    dest = tmp_path / "sub" / "file.fits"
    assert download(f"{server.url}/file.fits", dest, chunk_bytes=65536) == str(dest)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "file.fits.part").exists()


def test_checksum_accepted(server, tmp_path):
    dest = tmp_path / "file.fits"
    download(f"{server.url}/file.fits", dest, sha256=SHA.upper())
    assert sha256_of(dest) == SHA


def test_checksum_mismatch_discards_the_part(server, tmp_path):
    dest = tmp_path / "file.fits"
    with pytest.raises(InputError, match=r"file.fits: .* has sha256 [0-9a-f]{64}; expected 0+"):
        download(f"{server.url}/file.fits", dest, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_http_error_leaves_nothing(server, tmp_path):
    dest = tmp_path / "missing.fits"
    with pytest.raises(InputError, match=r"/missing.fits: HTTP error 404"):
        download(f"{server.url}/missing.fits", dest)
    assert list(tmp_path.iterdir()) == []
    assert len(server.requests) == 1  # a 404 is not retried


def test_unreachable_host_is_retried_then_an_input_error(tmp_path):
    with pytest.raises(
        InputError, match=r"could not connect .*gave up after 2 attempt\(s\), .*f.fits was not"
    ):
        download("http://127.0.0.1:9/file.fits", tmp_path / "f.fits", timeout=5, retries=1, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_part_file_of_a_killed_job_is_resumed(server, tmp_path):
    dest = tmp_path / "file.fits"
    _interrupt(server, dest)
    download(f"{server.url}/file.fits", dest, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/file.fits", f"bytes={CUT}-")]
    assert server.if_ranges == ['"v1"'] and list(tmp_path.iterdir()) == [dest]


def test_resume_asks_for_the_same_file_by_last_modified_without_an_etag(server, tmp_path):
    dest = tmp_path / "file.fits"
    server.validator, server.etag = "last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"
    _interrupt(server, dest)
    download(f"{server.url}/file.fits", dest, sha256=SHA)
    assert server.if_ranges == [server.etag] and dest.read_bytes() == PAYLOAD


# A second version of the file, of the same size: a splice of the two would pass every
# size and FITS-structure check.
PAYLOAD_B = (
    PAYLOAD[: len(PAYLOAD) - len(DATA) - (-len(DATA) % 2880)]
    + DATA[::-1]
    + b"\0" * (-len(DATA) % 2880)
)


def test_file_changed_on_the_server_is_downloaded_whole_not_spliced(server, tmp_path):
    dest = tmp_path / "file.fits"
    _interrupt(server, dest)
    server.payload, server.etag = PAYLOAD_B, '"v2"'
    download(f"{server.url}/file.fits", dest)
    assert dest.read_bytes() == PAYLOAD_B
    assert server.if_ranges == ['"v1"']  # the server answered 200 with the new file


def test_file_changed_behind_a_server_that_ignores_if_range_starts_over(server, tmp_path):
    dest = tmp_path / "file.fits"
    _interrupt(server, dest)
    server.payload, server.etag, server.honour_if_range = PAYLOAD_B, '"v2"', False
    download(f"{server.url}/file.fits", dest)
    assert dest.read_bytes() == PAYLOAD_B
    assert [r[1] for r in server.requests] == [f"bytes={CUT}-", None]


def test_part_from_a_server_without_validators_is_not_resumed(server, tmp_path):
    dest = tmp_path / "file.fits"
    server.validator = None
    _interrupt(server, dest)
    download(f"{server.url}/file.fits", dest)
    assert dest.read_bytes() == PAYLOAD and server.requests == [("/file.fits", None)]


def test_part_started_from_another_url_is_not_resumed(server, tmp_path):
    dest = tmp_path / "file.fits"
    _interrupt(server, dest)
    server.requests.clear()
    with pytest.raises(InputError, match="HTTP error 404"):
        download(f"{server.url}/other.fits", dest)  # the config's URL was edited
    assert server.requests == [("/other.fits", None)]


def test_part_without_a_record_is_not_resumed(server, tmp_path):
    dest = tmp_path / "file.fits"
    (tmp_path / "file.fits.part").write_bytes(PAYLOAD[:CUT])
    download(f"{server.url}/file.fits", dest)
    assert dest.read_bytes() == PAYLOAD and server.requests == [("/file.fits", None)]


def test_file_of_another_size_than_configured_is_refused_and_discarded(server, tmp_path):
    dest = tmp_path / "file.fits"
    with pytest.raises(
        InputError,
        match=rf"the downloaded file has {len(PAYLOAD)} bytes; expected 123 \(config 'size'\)",
    ):
        download(f"{server.url}/file.fits", dest, size=123)
    assert list(tmp_path.iterdir()) == []


def test_file_of_the_configured_size_is_accepted(server, tmp_path):
    download(f"{server.url}/file.fits", tmp_path / "file.fits", size=len(PAYLOAD))
    assert (tmp_path / "file.fits").read_bytes() == PAYLOAD


def test_truncated_file_served_whole_is_refused_without_a_sha256(server, tmp_path):
    server.payload = PAYLOAD[: len(PAYLOAD) - 2880]  # the server's own copy is cut
    with pytest.raises(InputError, match=r"ends inside the data of HDU 1.*expected a complete"):
        download(f"{server.url}/file.fits", tmp_path / "file.fits")
    assert list(tmp_path.iterdir()) == []


def test_redirect_to_ftp_is_refused(server, tmp_path):
    server.redirect = "ftp://127.0.0.1/file.fits"
    with pytest.raises(InputError, match=r"redirects to ftp://127.0.0.1/file.fits, whose scheme"):
        download(f"{server.url}/moved.fits", tmp_path / "file.fits")
    assert list(tmp_path.iterdir()) == [] and len(server.requests) == 1


def test_redirect_to_http_is_followed(server, tmp_path):
    server.redirect = f"{server.url}/file.fits"
    download(f"{server.url}/moved.fits", tmp_path / "file.fits")
    assert (tmp_path / "file.fits").read_bytes() == PAYLOAD


def test_short_body_with_content_length_is_never_moved_into_place(server, tmp_path):
    dest, part = tmp_path / "file.fits", tmp_path / "file.fits.part"
    server.mode = "short"
    sizes = [len(PAYLOAD) // 3]  # each retry resumes and gets a third of the rest
    for _ in range(2):
        sizes.append(sizes[-1] + (len(PAYLOAD) - sizes[-1]) // 3)
    with pytest.raises(
        InputError,
        match=rf"transfer ended at {sizes[-1]} bytes; expected {len(PAYLOAD)}; gave up after "
        rf"3 attempt\(s\), partial file kept at .*file.fits.part \({sizes[-1]} bytes\): run "
        "again to resume",
    ):
        download(f"{server.url}/file.fits", dest, retries=2, **FAST)
    assert not dest.exists() and part.read_bytes() == PAYLOAD[: sizes[-1]]
    assert [r[1] for r in server.requests] == [None] + [f"bytes={s}-" for s in sizes[:2]]
    server.mode = "normal"
    download(f"{server.url}/file.fits", dest, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_short_body_is_resumed_by_a_retry(server, tmp_path):
    dest = tmp_path / "file.fits"
    server.faults = ["short"]
    download(f"{server.url}/file.fits", dest, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [r[1] for r in server.requests] == [None, f"bytes={len(PAYLOAD) // 3}-"]


def test_dropped_body_without_length_is_never_moved_into_place(server, tmp_path):
    # HTTP/1.0 close-delimited body, no range support: the end of the stream looks the same
    # whether or not the connection was dropped; only the FITS structure tells.
    dest, part = tmp_path / "file.fits", tmp_path / "file.fits.part"
    server.mode = "nolength-drop"
    announced, there = len(DATA), len(PAYLOAD) // 3 - 2 * 2880
    with pytest.raises(
        InputError,
        match=r"the body had no length \(it ended when the server closed the connection\) and "
        rf".*file.fits.part ends inside the data of HDU 1: its header announces {announced} "
        rf"bytes, {there} are there; expected a complete FITS file; gave up after 2 attempt",
    ):
        download(f"{server.url}/file.fits", dest, retries=1, **FAST)
    assert not dest.exists() and part.read_bytes() == PAYLOAD[: len(PAYLOAD) // 3]


def test_dropped_body_without_length_resumes_where_ranges_work(server, tmp_path):
    dest = tmp_path / "file.fits"
    server.faults = ["nolength-drop"]
    download(f"{server.url}/file.fits", dest, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [r[1] for r in server.requests] == [None, f"bytes={len(PAYLOAD) // 3}-"]


def test_whole_body_without_length_is_accepted_as_a_complete_fits_file(server, tmp_path):
    dest = tmp_path / "file.fits"
    server.mode = "nolength"
    download(f"{server.url}/file.fits", dest, retries=0)
    assert dest.read_bytes() == PAYLOAD


def test_chunked_body_cut_before_its_last_chunk_keeps_the_part(server, tmp_path):
    dest, part = tmp_path / "file.fits", tmp_path / "file.fits.part"
    server.faults = ["chunked-drop"]
    with pytest.raises(InputError, match=r"connection lost after \d+ bytes \(IncompleteRead"):
        download(f"{server.url}/file.fits", dest, retries=0, timeout=10)
    assert not dest.exists() and part.read_bytes() == PAYLOAD[: len(PAYLOAD) // 3]


def test_503_on_a_range_request_keeps_the_part_and_retries(server, tmp_path):
    dest = tmp_path / "file.fits"
    _interrupt(server, dest)
    server.faults = ["503", "503"]
    download(f"{server.url}/file.fits", dest, sha256=SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [r[1] for r in server.requests] == [f"bytes={CUT}-"] * 3


def test_persistent_503_gives_up_and_keeps_the_part(server, tmp_path):
    dest = tmp_path / "file.fits"
    part = _interrupt(server, dest)
    server.mode = "503"
    with pytest.raises(
        InputError,
        match=r"HTTP error 503 Service Unavailable; gave up after 3 attempt\(s\), partial "
        rf"file kept at .*file.fits.part \({CUT} bytes\)",
    ):
        download(f"{server.url}/file.fits", dest, retries=2, **FAST)
    assert part.read_bytes() == PAYLOAD[:CUT] and not dest.exists()


def test_html_page_with_status_200_is_refused(server, tmp_path):
    server.mode = "html"
    url = f"{server.url}/file.fits"
    with pytest.raises(InputError) as excinfo:
        download(url, tmp_path / "file.fits", **FAST)
    assert str(excinfo.value).startswith(
        f"{url}: the body starts with '<!DOCTYPE html>' (Content-Type: text/html; "
        "charset=utf-8); expected a FITS file, whose first 2880-byte block starts with "
        "'SIMPLE  =' and holds 80-character ASCII header cards."
    )
    assert list(tmp_path.iterdir()) == [] and len(server.requests) == 1


def test_html_page_does_not_overwrite_a_part(server, tmp_path):
    part = _interrupt(server, tmp_path / "file.fits")
    server.mode = "html"
    with pytest.raises(InputError, match="starts with '<!DOCTYPE html>'"):
        download(f"{server.url}/file.fits", tmp_path / "file.fits")
    assert part.read_bytes() == PAYLOAD[:CUT]


def test_server_without_range_support_starts_over(server, tmp_path):
    dest = tmp_path / "file.fits"
    _interrupt(server, dest)
    server.mode = "ignore-range"
    download(f"{server.url}/file.fits", dest, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/file.fits", f"bytes={CUT}-")]


def test_part_that_is_not_fits_is_discarded_before_the_request(server, tmp_path):
    dest = tmp_path / "file.fits"
    (tmp_path / "file.fits.part").write_bytes(HTML)
    download(f"{server.url}/file.fits", dest, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/file.fits", None)]


def test_complete_part_file_is_verified_and_moved(server, tmp_path):
    dest = tmp_path / "file.fits"
    with _interrupt(server, dest).open("ab") as part:  # killed after its last byte
        part.write(PAYLOAD[CUT:])
    download(f"{server.url}/file.fits", dest, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/file.fits", f"bytes={len(PAYLOAD)}-")


def test_overlong_part_file_restarts(server, tmp_path):
    dest = tmp_path / "file.fits"
    (tmp_path / "file.fits.part").write_bytes(PAYLOAD + b"extra")
    download(f"{server.url}/file.fits", dest, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("url", ["ftp://example.org/a.fits", "file:///tmp/a.fits", "a.fits"])
def test_url_scheme_other_than_http_is_refused(url, tmp_path):
    with pytest.raises(InputError, match=rf"{re.escape(url)}: URL scheme .* is not supported"):
        download(url, tmp_path / "a.fits")


@pytest.mark.parametrize(
    ("url", "valid"),
    [
        ("https://example.org/a.fits", True),
        ("http://example.org/a.fits", True),
        ("ftp://example.org/a.fits", False),
        ("file:///tmp/a.fits", False),
    ],
)
def test_schema_allows_only_http_and_https_urls(url, valid):
    schema = yaml.safe_load(SCHEMA.read_text())
    spec = {"$ref": "#/$defs/download_spec", "$defs": schema["$defs"]}
    errors = list(jsonschema.Draft202012Validator(spec).iter_errors({"url": url, "filename": "a"}))
    assert [e.path[-1] for e in errors] == ([] if valid else ["url"])


def test_the_record_command_prints_the_config_lines_of_a_downloaded_file(tmp_path, capsys):
    path = tmp_path / "file.fits"
    path.write_bytes(PAYLOAD)
    main([str(path)])
    lines = yaml.safe_load(capsys.readouterr().out)
    assert lines == {"sha256": SHA, "size": len(PAYLOAD)}
