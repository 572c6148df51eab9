"""dustpred.logutil: what a failed rule script prints."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import sys
import h5py
import numpy as np
from dustpred.logutil import setup_logging

setup_logging(sys.argv[1])
{body}
"""


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    log = tmp_path / "job.log"
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(body=body), str(log)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_one_line_without_a_traceback(tmp_path):
    # /dev/full answers every write with ENOSPC, as a full disk does.
    done = _run(tmp_path, "np.save(open('/dev/full', 'wb'), np.zeros(10**6))")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "job failed: no space left on the device holding" in done.stderr
    assert "df -h" in (tmp_path / "job.log").read_text()


def test_an_h5py_style_disk_full_message_is_recognised(tmp_path):
    body = (
        "raise OSError(\"Can't synchronously write data (file write failed: errno = 28, "
        "error message = 'No space left on device')\")"
    )
    done = _run(tmp_path, body)
    assert "no space left on the device" in done.stderr and "Traceback" not in done.stderr


def test_any_other_failure_keeps_its_traceback(tmp_path):
    done = _run(tmp_path, "raise RuntimeError('boom')")
    assert done.returncode != 0 and "Traceback" in done.stderr and "boom" in done.stderr
    assert "job failed" in (tmp_path / "job.log").read_text()
