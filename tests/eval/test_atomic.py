"""Atomic writes: a failure mid-write leaves the old file intact and no temp file."""

from __future__ import annotations

import pytest

from eval.atomic import atomic_write, atomic_write_bytes


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")

    def explode(handle):
        handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, explode)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_written_file_is_readable_by_others(tmp_path):
    target = atomic_write_bytes(tmp_path / "sub" / "x.bin", b"data")
    assert target.read_bytes() == b"data" and target.stat().st_mode & 0o044  # not mkstemp's 0600
