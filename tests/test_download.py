"""dustpred.download against a local HTTP server on 127.0.0.1 (Range support, failures)."""

import hashlib
import http.server
import re
import threading

import pytest

from dustpred.download import download, sha256_of
from dustpred.errors import InputError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, not all one byte
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /file.fits with Range support; the server's `mode` injects faults."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        if self.path != "/file.fits":
            self.send_error(404, "Not Found")
            return
        start = 0
        match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        if match and server.mode != "ignore-range":
            start = int(match.group(1))
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.mode == "drop":
            # Send part of the body, then close: the client sees a short read.
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.mode = "normal"
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_downloads_whole_file(server, tmp_path):
    dest = tmp_path / "sub" / "file.fits"
    assert download(f"{server.url}/file.fits", dest, chunk_bytes=65536) == str(dest)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "file.fits.part").exists()


def test_checksum_accepted(server, tmp_path):
    dest = tmp_path / "file.fits"
    download(f"{server.url}/file.fits", dest, sha256=SHA.upper())
    assert sha256_of(dest) == SHA


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    dest = tmp_path / "file.fits"
    with pytest.raises(InputError, match=r"file.fits: sha256 .* is [0-9a-f]{64}; expected 0+"):
        download(f"{server.url}/file.fits", dest, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_http_error_leaves_nothing(server, tmp_path):
    dest = tmp_path / "missing.fits"
    with pytest.raises(InputError, match=r"/missing.fits: HTTP error 404"):
        download(f"{server.url}/missing.fits", dest)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_host_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="could not connect"):
        download("http://127.0.0.1:9/file.fits", tmp_path / "f.fits", timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_resumes_from_partial_file(server, tmp_path):
    dest = tmp_path / "file.fits"
    (tmp_path / "file.fits.part").write_bytes(PAYLOAD[:300_000])
    download(f"{server.url}/file.fits", dest, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/file.fits", "bytes=300000-")]


def test_dropped_connection_keeps_part_then_resumes(server, tmp_path):
    dest = tmp_path / "file.fits"
    server.mode = "drop"
    with pytest.raises(InputError, match=r"(connection lost|transfer ended).*run again to resume"):
        download(f"{server.url}/file.fits", dest, sha256=SHA, timeout=10)
    part = tmp_path / "file.fits.part"
    assert not dest.exists() and 0 < part.stat().st_size < len(PAYLOAD)
    server.mode = "normal"
    download(f"{server.url}/file.fits", dest, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests[-1][1] == f"bytes={len(PAYLOAD) // 3}-"


def test_server_ignoring_range_starts_over(server, tmp_path):
    dest = tmp_path / "file.fits"
    (tmp_path / "file.fits.part").write_bytes(b"garbage" * 1000)
    server.mode = "ignore-range"
    download(f"{server.url}/file.fits", dest, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_file_is_verified_and_moved(server, tmp_path):
    dest = tmp_path / "file.fits"
    (tmp_path / "file.fits.part").write_bytes(PAYLOAD)
    download(f"{server.url}/file.fits", dest, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/file.fits", f"bytes={len(PAYLOAD)}-")


def test_overlong_part_file_restarts(server, tmp_path):
    dest = tmp_path / "file.fits"
    (tmp_path / "file.fits.part").write_bytes(PAYLOAD + b"extra")
    download(f"{server.url}/file.fits", dest, sha256=SHA)
    assert dest.read_bytes() == PAYLOAD
