"""toy_data dataset folders: round trip, checksums, corruption/mismatch detection, atomic writes, CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import toy_data
from toy_data import DatasetError, load_dataset, split_seeds, task_spec, write_dataset
from toy_data import storage as storage_mod
from toy_data.cli import main as cli_main

SMALL = dict(size=64, margin=4, radii=(8.0, 8.0), hole_radius=3.0)
COUNTS = dict(n_train=30, n_val=10, n_test=12)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    spec = task_spec("donuts_shape", **SMALL)
    return write_dataset(
        spec, tmp_path_factory.mktemp("ds") / "donuts", seed=5, workers=1, progress=False, **COUNTS
    )


@pytest.fixture
def copy(dataset, tmp_path) -> Path:
    """A private copy of the dataset to damage."""
    return Path(shutil.copytree(dataset, tmp_path / "copy"))


def test_round_trip(dataset):
    ds = load_dataset(dataset)
    spec = task_spec("donuts_shape", **SMALL)
    assert ds.spec == spec and ds.manifest["seed"] == 5
    seeds = split_seeds(5)
    for name, n in zip(("train", "val", "test"), COUNTS.values(), strict=True):
        sp = ds.split(name)
        assert len(sp) == n and isinstance(sp.images, np.memmap)
        assert sp.images.dtype == np.float32 and sp.masks.dtype == np.uint8
        assert sp.labels.dtype == np.int64 and sp.boxes.dtype == np.float32
        assert sp.images.shape == (n, 64, 64) and sp.labels.shape == (n, 1) and sp.boxes.shape == (n, 1, 4)
        ref = toy_data.generate_split(spec, seeds[name], n)
        for key in ref:
            assert np.asarray(getattr(sp, key)).tobytes() == ref[key].tobytes()
        counts = ds.manifest["splits"][name]["class_counts"]
        assert counts == {str(k): v for k, v in sp.class_counts().items()} and sum(counts.values()) == n
    assert sorted(os.listdir(dataset)) == ["manifest.json", "test", "train", "val"]


def test_subset_is_prefix(dataset):
    train = load_dataset(dataset, verify=False).split("train")
    sub = train.subset(7)
    assert len(sub) == 7 and sub.images.tobytes() == train.images[:7].tobytes()
    with pytest.raises(ValueError, match="subset of 31 samples requested but the train split holds only 30"):
        train.subset(31)


def test_workers_write_identical_files(dataset, tmp_path):
    spec = task_spec("donuts_shape", **SMALL)
    other = write_dataset(spec, tmp_path / "w2", seed=5, workers=2, progress=False, **COUNTS)
    assert (other / "manifest.json").read_bytes() == (dataset / "manifest.json").read_bytes()
    for name in ("train", "val", "test"):
        for key in ("images", "masks", "labels", "boxes"):
            assert (other / name / f"{key}.npy").read_bytes() == (dataset / name / f"{key}.npy").read_bytes()


# --- damage is detected ---------------------------------------------------------------------------


def test_flipped_byte_detected(copy):
    f = copy / "val" / "images.npy"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(
        DatasetError, match=r"val/images\.npy: SHA-256 mismatch: manifest says [0-9a-f]{64}, file has"
    ):
        load_dataset(copy)
    load_dataset(copy, verify=False)  # sizes and headers still fine: opening without checksums works
    with pytest.raises(DatasetError, match="SHA-256 mismatch"):
        load_dataset(copy, verify=False).verify()


def test_truncated_file_detected(copy):
    f = copy / "train" / "masks.npy"
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        fh.truncate(size - 100)
    with pytest.raises(
        DatasetError,
        match=rf"train/masks\.npy: size {size - 100} bytes, manifest says {size} \(truncated; regenerate the dataset",
    ):
        load_dataset(copy, verify=False)
    load_dataset(copy, verify=False, splits=("val", "test"))  # readers of other splits are not stopped
    with pytest.raises(ValueError, match="splits: expected names from"):
        load_dataset(copy, splits=("tests",))


def test_missing_file_detected(copy):
    (copy / "test" / "boxes.npy").unlink()
    with pytest.raises(DatasetError, match=r"test/boxes\.npy: missing"):
        load_dataset(copy)


def _edit_manifest(folder: Path, edit) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    edit(m)
    (folder / "manifest.json").write_text(json.dumps(m))


def test_manifest_of_other_task_detected(copy):
    # Same shapes, so only the content check can tell: the arrays are not what this spec generates.
    _edit_manifest(copy, lambda m: m["task"].update(task="donuts_pattern"))
    with pytest.raises(DatasetError, match="sample 0 differs from what the manifest's task spec and seed"):
        load_dataset(copy)


def test_manifest_seed_mismatch_detected(copy):
    _edit_manifest(copy, lambda m: m["splits"]["val"].update(seed=m["splits"]["val"]["seed"] + 1))
    with pytest.raises(DatasetError, match=r"val/images\.npy sample 0 differs"):
        load_dataset(copy)


def test_manifest_shape_mismatch_detected(copy):
    _edit_manifest(copy, lambda m: m["task"].update(shape=[64, 80]))
    with pytest.raises(
        DatasetError, match=r"train/images: shape .*expected \(30, 64, 80\), found \(30, 64, 64\)"
    ):
        load_dataset(copy, verify=False)


def test_manifest_count_mismatch_detected(copy):
    _edit_manifest(copy, lambda m: m["splits"]["test"].update(n=11))
    with pytest.raises(
        DatasetError, match=r"test/images: shape .*expected \(11, 64, 64\), found \(12, 64, 64\)"
    ):
        load_dataset(copy, verify=False)


def test_class_count_mismatch_detected(copy):
    _edit_manifest(copy, lambda m: m["splits"]["train"].update(class_counts={"1": 0, "2": 30}))
    with pytest.raises(DatasetError, match="train class_counts .* but labels.npy holds"):
        load_dataset(copy, verify=False)


def test_bad_manifest_detected(copy, tmp_path):
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="manifest.json: not valid JSON"):
        load_dataset(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(DatasetError, match="manifest.json: missing"):
        load_dataset(copy)
    with pytest.raises(DatasetError, match="no such dataset folder"):
        load_dataset(tmp_path / "nope")
    assert issubclass(DatasetError, ValueError)


# --- atomic writes --------------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch, exc):
    calls = {"n": 0}
    real_append = storage_mod._NpyWriter.append

    def flaky_append(self, arr):
        calls["n"] += 1
        if calls["n"] == 6:  # in the middle of the val split
            raise exc
        real_append(self, arr)

    monkeypatch.setattr(storage_mod._NpyWriter, "append", flaky_append)
    spec = task_spec("donuts_shape", **SMALL)
    with pytest.raises(type(exc)):
        write_dataset(spec, tmp_path / "ds", progress=False, workers=1, **COUNTS)
    assert os.listdir(tmp_path) == []  # neither the folder nor a partial sibling remains


def test_killed_write_never_looks_complete(tmp_path):
    """A hard kill (no cleanup runs) leaves at most a hidden partial sibling without a manifest."""
    script = textwrap.dedent(
        f"""
        import time, toy_data, toy_data.storage as s
        real = s._NpyWriter.append
        def slow(self, arr):
            real(self, arr)
            time.sleep(0.05)
        s._NpyWriter.append = slow
        toy_data.write_dataset(toy_data.task_spec("donuts_shape", **{SMALL!r}), {str(tmp_path / "ds")!r},
                               progress=False, workers=1, n_train=400, n_val=0, n_test=0)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 30
    while not any((p / "train" / "images.npy").exists() for p in tmp_path.glob(".ds.partial-*")):
        assert time.time() < deadline and proc.poll() is None, "writer never started"
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "ds").exists()
    for leftover in tmp_path.iterdir():
        assert leftover.name.startswith(".ds.partial-") and not (leftover / "manifest.json").exists()
        with pytest.raises(DatasetError, match="manifest.json: missing"):
            load_dataset(leftover)


def test_existing_folder_needs_overwrite(dataset, tmp_path):
    spec = task_spec("donuts_pattern", **SMALL)
    target = Path(shutil.copytree(dataset, tmp_path / "ds"))
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        write_dataset(spec, target, progress=False, **COUNTS)
    write_dataset(spec, target, progress=False, overwrite=True, n_train=5, n_val=2, n_test=2)
    assert load_dataset(target).spec.task == "donuts_pattern"
    assert sorted(os.listdir(tmp_path)) == ["ds"]


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_generate_and_preview(tmp_path, capsys):
    args = ["generate", "--dim", "3", "--size", "24", "--margin", "3", "--n-train", "6", "--n-val", "2"]
    args += ["--n-test", "2", "--seed", "1", "--quiet", "--out", str(tmp_path / "toy3d")]
    assert (
        cli_main([*args[:3], "--radii", "5", "5", "--hole-radius", "2", *args[3:]]) == 2
    )  # circles: radii must differ
    assert "circles_scale tells the classes apart by radius only" in capsys.readouterr().err
    assert (
        cli_main(["generate", "--task", "donuts_shape", *args[1:], "--radii", "5", "5", "--hole-radius", "2"])
        == 0
    )
    ds = load_dataset(tmp_path / "toy3d")
    assert ds.spec == task_spec("donuts_shape", 3, size=24, margin=3, radii=(5, 5), hole_radius=2)
    assert len(ds.split("train")) == 6
    # Re-running the same command is a no-op; a different one needs --overwrite.
    same = ["generate", "--task", "donuts_shape", *args[1:], "--radii", "5", "5", "--hole-radius", "2"]
    assert cli_main(same) == 0 and "up to date" in capsys.readouterr().err
    assert cli_main([*same, "--no-noise"]) == 2 and "--overwrite" in capsys.readouterr().err
    assert (
        cli_main(["preview", str(tmp_path / "toy3d"), "--out", str(tmp_path / "p.png"), "--per-class", "2"])
        == 0
    )
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_all_tasks_2d(tmp_path):
    out = tmp_path / "toy2d"
    small = ["--size", "64", "--margin", "4", "--n-train", "4", "--n-val", "2", "--n-test", "2", "--quiet"]
    # donuts need equal radii, circles different ones: the default radii work for all three tasks.
    assert cli_main(["generate", "--out", str(out), *small]) == 0
    assert sorted(os.listdir(out)) == sorted(toy_data.TASKS)
    assert cli_main(["preview", str(out / "circles_scale"), "--out", str(tmp_path / "c.png")]) == 0


def test_python_m_entry_point(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "toy_data", "generate", "--help"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "--objects-per-image" in r.stdout


TINY = ["--size", "32", "--margin", "3", "--radii", "5", "5", "--hole-radius", "2", "--n-train", "3",
        "--n-val", "2", "--n-test", "2", "--quiet"]
TINY_ALL = ["--size", "64", "--margin", "4", "--n-train", "3", "--n-val", "2", "--n-test", "2", "--quiet"]


@pytest.mark.parametrize("flag", ["--n-train", "--n-val", "--n-test"])
@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_cli_rejects_empty_or_bad_split_sizes(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as e:
        cli_main(["generate", "--task", "donuts_shape", "--out", str(tmp_path / "d"), *TINY, flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag} expects an integer >= 1" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_cli_never_mixes_layouts(tmp_path, capsys):
    """One-task folder vs one-folder-per-task vs a folder of something else: refused, even with --overwrite."""
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert cli_main(["generate", "--task", "donuts_shape", "--out", str(single), *TINY]) == 0
    before = sorted(p.name for p in single.iterdir())
    for extra in ([], ["--overwrite"]):
        assert cli_main(["generate", "--dim", "2", "--out", str(single), *TINY_ALL, *extra]) == 2
        assert "single-task dataset folder" in capsys.readouterr().err
    assert sorted(p.name for p in single.iterdir()) == before  # nothing added inside the dataset
    multi.mkdir()
    (multi / "donuts_shape").mkdir()
    for extra in ([], ["--overwrite"]):
        assert cli_main(["generate", "--task", "donuts_shape", "--out", str(multi), *TINY, *extra]) == 2
        assert "one dataset folder per task" in capsys.readouterr().err
    assert (multi / "donuts_shape").is_dir() and not (multi / "manifest.json").exists()
    other = tmp_path / "images"
    other.mkdir()
    (other / "a.npy").write_bytes(b"x")
    for args in (["--task", "donuts_shape", *TINY], TINY_ALL):
        assert cli_main(["generate", *args, "--out", str(other), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert "a.npy" in err and err.count("\n") == 1
    assert sorted(p.name for p in other.iterdir()) == ["a.npy"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["generate", "--task", "donuts_shape", "--out", str(empty), *TINY]) == 0
    assert load_dataset(empty).spec.task == "donuts_shape"


def test_cli_preview_prints_the_file_it_wrote(tmp_path, capsys):
    ds = tmp_path / "ds"
    assert cli_main(["generate", "--task", "donuts_shape", "--out", str(ds), *TINY]) == 0
    capsys.readouterr()
    for out, written in ((tmp_path / "noext", tmp_path / "noext.png"),
                         (tmp_path, tmp_path / "donuts_shape_2d_train.png"),
                         (tmp_path / "x.png", tmp_path / "x.png")):
        assert cli_main(["preview", str(ds), "--out", str(out), "--per-class", "1"]) == 0
        assert capsys.readouterr().err.strip() == f"wrote {written}"
        assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
