"""The shared atomic writers: whole file or old file, ordinary permissions, nothing left behind."""

from __future__ import annotations

import json
import os
import stat

import pytest

from retina_unet.atomic_io import atomic_dir, atomic_write, write_json_atomic, write_text_atomic


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_get_ordinary_permissions_not_mkstemps_0600(tmp_path):
    umask = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "sub" / "a.json", {"x": [1, 2]})
        assert json.loads(path.read_text()) == {"x": [1, 2]}
        assert _mode(path) == 0o644
        with atomic_dir(tmp_path / "out") as tmp:
            write_text_atomic(tmp / "b.txt", "hi")
        assert _mode(tmp_path / "out") == 0o755 and (tmp_path / "out" / "b.txt").read_text() == "hi"
    finally:
        os.umask(umask)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = write_text_atomic(tmp_path / "r.txt", "old")

    def half(fh):
        fh.write(b"ne")
        raise KeyboardInterrupt  # a Ctrl-C mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["r.txt"]


def test_atomic_dir_refuses_a_non_empty_folder_and_cleans_up_on_error(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("1")
    with pytest.raises(ValueError, match="--out.*not empty"):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "new").write_text("2")
            raise RuntimeError("failed half way")
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == ["keep"]
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "new").write_text("2")
    assert os.listdir(out) == ["new"] and sorted(os.listdir(tmp_path)) == ["out"]
