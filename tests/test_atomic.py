"""dustpred.atomic: outputs appear complete or not at all; a killed job's leftovers go."""

from __future__ import annotations

import pytest

from dustpred.atomic import atomic_path, atomic_write


def test_output_appears_only_when_the_block_succeeds(tmp_path):
    out = tmp_path / "stack.npy"
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    atomic_write(out, lambda p: p.write_bytes(b"whole"))
    assert out.read_bytes() == b"whole"


def test_temporaries_left_by_a_killed_job_are_removed_on_the_next_write(tmp_path):
    out = tmp_path / "shard-1-of-2.h5"
    # What a SIGKILLed writer leaves: its hidden temporary, under another pid.
    stale = tmp_path / ".shard-1-of-2.h5.4242.deadbeef.tmp"
    stale.write_bytes(b"x" * 1000)
    other = tmp_path / ".shard-2-of-2.h5.4242.deadbeef.tmp"  # another output's: kept
    other.write_bytes(b"y")
    atomic_write(out, lambda p: p.write_bytes(b"done"))
    assert not stale.exists()
    assert other.exists()
    assert out.read_bytes() == b"done"
