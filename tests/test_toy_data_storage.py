"""toy_data dataset folders: round trip, checksums, corruption/mismatch detection, atomic writes, CLI."""

from __future__ import annotations

import json
import os
import re
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


# --- the command line: its documented options, their values, and what reaches the generator -----


def _help(capsys, monkeypatch, *argv) -> str:
    """``toy_data [argv] --help`` on a wide terminal, whitespace collapsed (one line per option)."""
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as e:
        cli_main([*argv, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_cli_help_names_the_program_its_commands_and_every_option(capsys, monkeypatch):
    top = _help(capsys, monkeypatch)
    assert top.startswith("usage: toy_data [-h] {generate,preview} ... "
                          "Retina U-Net toy datasets (2D paper tasks, 3D analogues) ")
    assert "generate generate dataset folder(s) preview draw examples per class with mask outlines and boxes " in top
    gen = _help(capsys, monkeypatch, "generate")
    assert gen.startswith("usage: toy_data generate [-h] [--task {donuts_shape,donuts_pattern,circles_scale}] "
                          "[--dim {2,3}] --out OUT [--seed SEED] ")
    for line in (
        "--task {donuts_shape,donuts_pattern,circles_scale} one task into OUT (default: all three into OUT/<task>) ",
        "--seed SEED dataset seed (train/val/test streams derive from it) ",
        "--n-train N_TRAIN training pool size, >= 1 (nested subsets are prefixes) ",
        "--n-val N_VAL validation images, >= 1 ",
        "--n-test N_TEST test images, >= 1 ",
        "--workers WORKERS generation threads (default: CPUs - 1, at most 4) ",
        "--overwrite replace an existing folder ",
        "--quiet no progress bar ",
        "task overrides (default: the task's paper/3D defaults): ",
        "--size SIZE [SIZE ...] image size: one value for every axis, or one per axis ",
        "--radii R1 R2 object radius of class 1 and 2 ",
        "--hole-radius HOLE_RADIUS hole radius of class-2 donuts ",
        "--contrast CONTRAST intensity added to object pixels (default 0.2) ",
        "--margin MARGIN centres are uniform in [margin, size - margin) ",
        "--no-noise background exactly 0 instead of uniform [0, 1) ",
        "--objects-per-image OBJECTS_PER_IMAGE objects per image (placed without overlap) ",
    ):
        assert line in gen, line
    assert gen.endswith("--gap GAP minimum free distance between objects (K > 1)")
    pre = _help(capsys, monkeypatch, "preview")
    assert pre.startswith("usage: toy_data preview [-h] --out OUT [--split {train,val,test}] [--per-class PER_CLASS] "
                          "[--verify] dataset ")
    assert "--out OUT PNG to write " in pre
    assert pre.endswith("--verify also verify the checksums first")


def test_cli_generate_defaults_and_value_types():
    from toy_data.cli import _parser

    ns = _parser().parse_args(["generate", "--out", "d"])
    assert vars(ns) == {
        "command": "generate", "task": None, "dim": 2, "out": Path("d"), "seed": 0, "n_train": 1000, "n_val": 500,
        "n_test": 1000, "workers": None, "overwrite": False, "quiet": False, "size": None, "radii": None,
        "hole_radius": None, "contrast": None, "margin": None, "no_noise": False, "objects_per_image": None,
        "gap": None,
    }
    ns = _parser().parse_args([
        "generate", "--task", "circles_scale", "--dim", "3", "--out", "d", "--seed", "7", "--n-train", "1",
        "--n-val", "1", "--n-test", "1", "--workers", "3", "--overwrite", "--quiet", "--size", "32", "40",
        "--radii", "5", "6", "--hole-radius", "2", "--contrast", "0.5", "--margin", "3", "--no-noise",
        "--objects-per-image", "2", "--gap", "1.5",
    ])
    assert vars(ns) == {
        "command": "generate", "task": "circles_scale", "dim": 3, "out": Path("d"), "seed": 7, "n_train": 1,
        "n_val": 1, "n_test": 1, "workers": 3, "overwrite": True, "quiet": True, "size": [32, 40],
        "radii": [5.0, 6.0], "hole_radius": 2.0, "contrast": 0.5, "margin": 3, "no_noise": True,
        "objects_per_image": 2, "gap": 1.5,
    }
    assert [type(ns.hole_radius), type(ns.workers), type(ns.margin)] == [float, int, int]


def test_cli_preview_defaults_and_value_types():
    from toy_data.cli import _parser

    ns = _parser().parse_args(["preview", "ds", "--out", "p.png"])
    assert vars(ns) == {"command": "preview", "dataset": Path("ds"), "out": Path("p.png"), "split": "train",
                        "per_class": 4, "verify": False}
    for split in ("train", "val", "test"):
        ns = _parser().parse_args(["preview", "ds", "--out", "p", "--split", split, "--per-class", "2", "--verify"])
        assert (ns.split, ns.per_class, ns.verify) == (split, 2, True)


@pytest.mark.parametrize("argv", [
    [],  # a command is required
    ["generate"],  # --out is required
    ["generate", "--out", "d", "--dim", "4"],
    ["generate", "--out", "d", "--task", "donuts"],
    ["generate", "--out", "d", "--radii", "5"],  # two radii
    ["preview", "ds"],  # --out is required
    ["preview", "ds", "--out", "p", "--split", "training"],
    ["preview", "ds", "--out", "p", "--per-class", "two"],
])
def test_cli_usage_errors_exit_2_before_doing_anything(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert e.value.code == 2 and "usage: toy_data" in capsys.readouterr().err


def test_cli_split_sizes_of_one_are_accepted():
    from toy_data.cli import _parser

    ns = _parser().parse_args(["generate", "--out", "d", "--n-train", "1", "--n-val", "1", "--n-test", "1"])
    assert (ns.n_train, ns.n_val, ns.n_test) == (1, 1, 1)


class _WriteRecorder:
    """Stands in for write_dataset in the CLI: records each call (and writes nothing)."""

    def __init__(self):
        self.calls = []

    def __call__(self, spec, out, **kwargs):
        self.calls.append((spec, out, kwargs))
        return out


def test_cli_generate_hands_every_argument_to_the_writer(tmp_path, capsys, monkeypatch):
    import toy_data.cli as cli

    rec = _WriteRecorder()
    monkeypatch.setattr(cli, "write_dataset", rec)
    out = tmp_path / "d"
    argv = ["generate", "--task", "donuts_shape", "--out", str(out), "--size", "32", "40", "--margin", "3",
            "--radii", "5", "5", "--hole-radius", "2", "--contrast", "0.5", "--no-noise", "--seed", "7",
            "--n-train", "3", "--n-val", "2", "--n-test", "1", "--workers", "3"]
    assert cli_main([*argv, "--quiet", "--overwrite"]) == 0
    spec = task_spec("donuts_shape", 2, shape=(32, 40), margin=3, radii=(5.0, 5.0), hole_radius=2.0, contrast=0.5,
                     noise=False)
    assert rec.calls == [(spec, out, {"seed": 7, "n_train": 3, "n_val": 2, "n_test": 1, "workers": 3,
                                      "progress": False, "overwrite": True})]
    assert capsys.readouterr().err == f"wrote {out}\n"
    rec.calls.clear()
    assert cli_main(argv) == 0  # a bar unless --quiet; no overwrite unless asked
    assert rec.calls[0][2]["progress"] is True and rec.calls[0][2]["overwrite"] is False
    assert cli_main(["generate", "--task", "donuts_shape", "--out", str(out), "--size", "40", "--radii", "5", "5",
                     "--hole-radius", "2"]) == 0
    assert rec.calls[-1][0].shape == (40, 40)  # one size: every axis


def test_cli_generate_defaults_reach_the_writer_for_each_task(tmp_path, monkeypatch):
    import toy_data.cli as cli

    rec = _WriteRecorder()
    monkeypatch.setattr(cli, "write_dataset", rec)
    assert cli_main(["generate", "--out", str(tmp_path / "all")]) == 0
    assert [(spec, out) for spec, out, _ in rec.calls] == [
        (task_spec(t, 2), tmp_path / "all" / t) for t in ("donuts_shape", "donuts_pattern", "circles_scale")]
    defaults = {"seed": 0, "n_train": 1000, "n_val": 500, "n_test": 1000, "workers": None, "progress": True,
                "overwrite": False}
    assert [kw for _, _, kw in rec.calls] == [defaults] * 3


def test_cli_generate_goes_on_past_an_up_to_date_task(tmp_path, capsys, monkeypatch):
    """All three tasks: the first two are up to date, the third (deleted) is written again."""
    import toy_data.cli as cli

    out = tmp_path / "all"
    assert cli_main(["generate", "--out", str(out), *TINY_ALL]) == 0
    shutil.rmtree(out / "circles_scale")
    capsys.readouterr()
    rec = _WriteRecorder()
    monkeypatch.setattr(cli, "write_dataset", rec)
    assert cli_main(["generate", "--out", str(out), *TINY_ALL]) == 0
    assert [o.name for _, o, _ in rec.calls] == ["circles_scale"]
    assert capsys.readouterr().err == (f"{out / 'donuts_shape'}: up to date (same task, seed and sizes); skipped\n"
                                       f"{out / 'donuts_pattern'}: up to date (same task, seed and sizes); skipped\n"
                                       f"wrote {out / 'circles_scale'}\n")


def test_cli_up_to_date_reads_the_manifest_without_checksums_and_refuses_a_damaged_one(tmp_path, capsys):
    """Re-running a finished command skips the folder without hashing every file; a folder whose
    manifest cannot be read is not up to date: refused without --overwrite."""
    out = tmp_path / "all"
    assert cli_main(["generate", "--out", str(out), *TINY_ALL]) == 0
    f = out / "donuts_shape" / "train" / "images.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01  # a checksum mismatch, sizes unchanged
    f.write_bytes(bytes(data))
    capsys.readouterr()
    assert cli_main(["generate", "--out", str(out), *TINY_ALL]) == 0
    assert capsys.readouterr().err.count("up to date") == 3
    (out / "donuts_pattern" / "manifest.json").write_text("{not json")
    assert cli_main(["generate", "--out", str(out), *TINY_ALL]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: {out / 'donuts_pattern'} exists with different contents; use --overwrite to replace it")


def _layout_error(capsys, argv) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err.strip()


def test_cli_layout_refusals_name_the_folder_and_what_is_in_it(tmp_path, capsys):
    one = ["generate", "--task", "donuts_shape", *TINY]
    f = tmp_path / "file"
    f.write_text("x")
    assert _layout_error(capsys, [*one, "--out", str(f)]) == (
        f"error: --out {f}: exists and is not a folder; choose another --out")
    multi = tmp_path / "multi"
    for t in ("donuts_shape", "circles_scale"):
        (multi / t).mkdir(parents=True)
    assert _layout_error(capsys, [*one, "--out", str(multi)]) == (
        f"error: --out {multi}: holds one dataset folder per task (circles_scale, donuts_shape); generate into "
        f"{multi}/<task> or without --task; choose another --out")
    other = tmp_path / "other"
    other.mkdir()
    for name in ("a", "b", "c"):
        (other / name).write_text("x")
    assert _layout_error(capsys, [*one, "--out", str(other)]) == (
        f"error: --out {other}: exists and is not a dataset folder (holds a, b, c); choose another --out")
    assert _layout_error(capsys, ["generate", *TINY_ALL, "--out", str(other)]) == (
        f"error: --out {other}: holds files that are not task folders (a, b, c); choose another --out")
    (other / "d").write_text("x")
    assert _layout_error(capsys, [*one, "--out", str(other)]) == (
        f"error: --out {other}: exists and is not a dataset folder (holds a, b, c, ...); choose another --out")
    assert _layout_error(capsys, ["generate", *TINY_ALL, "--out", str(other)]) == (
        f"error: --out {other}: holds files that are not task folders (a, b, c, ...); choose another --out")
    single = tmp_path / "single"
    assert cli_main([*one, "--out", str(single)]) == 0
    capsys.readouterr()
    assert _layout_error(capsys, ["generate", *TINY_ALL, "--out", str(single)]) == (
        f"error: --out {single}: is a single-task dataset folder; without --task OUT gets one folder per task; "
        "choose another --out")


def test_cli_ignores_hidden_leftovers_of_an_interrupted_write(tmp_path, capsys):
    """A killed write leaves a hidden ``.<task>.partial-*`` sibling: not a foreign file."""
    out = tmp_path / "all"
    (out / ".donuts_shape.partial-1234").mkdir(parents=True)
    assert cli_main(["generate", "--out", str(out), *TINY_ALL]) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(toy_data.TASKS)


def test_cli_preview_hands_its_arguments_to_the_writer(tmp_path, capsys, monkeypatch):
    import toy_data.preview as preview

    calls = []

    def record(dataset, out, **kwargs):
        calls.append((dataset, out, kwargs))
        return Path(out)

    monkeypatch.setattr(preview, "write_preview", record)
    assert cli_main(["preview", "ds", "--out", "p.png"]) == 0
    assert cli_main(["preview", "ds", "--out", "p.png", "--split", "val", "--per-class", "2", "--verify"]) == 0
    assert calls == [(Path("ds"), Path("p.png"), {"split": "train", "per_class": 4, "verify": False}),
                     (Path("ds"), Path("p.png"), {"split": "val", "per_class": 2, "verify": True})]
    assert capsys.readouterr().err == "wrote p.png\nwrote p.png\n"


# --- writing: argument checks, layout, manifest, the generator's threads, failures ---------------

TINY_SPEC = dict(size=32, margin=3, radii=(5.0, 5.0), hole_radius=2.0)


def _tiny_spec(dim=2):
    return task_spec("donuts_shape", dim, **{**TINY_SPEC, "size": 32 if dim == 2 else 24})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """donuts_shape 2D 32x32, seed 0: train 6 (labels 2 1 2 2 2 1), val 3, test 1."""
    return write_dataset(_tiny_spec(), tmp_path_factory.mktemp("tiny") / "ds", seed=0, n_train=6, n_val=3,
                         n_test=1, workers=1, progress=False)


@pytest.fixture
def tiny_copy(tiny, tmp_path) -> Path:
    return Path(shutil.copytree(tiny, tmp_path / "ds"))


def test_split_seeds_are_fixed_64_bit_values():
    """Part of the dataset format (every manifest records them): pinned, and using both 32-bit words."""
    assert split_seeds(0) == {"train": 12750949206108985319, "val": 17029223190271853676,
                              "test": 13490992829113174973}
    assert split_seeds(5) == {"train": 72255951453554333, "val": 16305803262819392470, "test": 13856096064492003188}
    for bad in (True, "1", -1, 1.0):
        with pytest.raises(ValueError, match=rf"^seed must be an integer >= 0, got {re.escape(repr(bad))}$"):
            split_seeds(bad)


def test_write_dataset_checks_each_split_size_by_name(tmp_path):
    for name in ("n_train", "n_val", "n_test"):
        for bad in (True, "3", -1, 2.0):
            with pytest.raises(ValueError, match=rf"^{name} must be an integer >= 0, got {re.escape(repr(bad))}$"):
                write_dataset(_tiny_spec(), tmp_path / "d", progress=False, **{name: bad})
    assert not (tmp_path / "d").exists()


def test_an_empty_split_is_written_and_loads_with_verification(tmp_path):
    ds = load_dataset(write_dataset(_tiny_spec(), tmp_path / "d", n_train=2, n_val=0, n_test=1, progress=False))
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [2, 0, 1]
    assert ds.split("val").images.shape == (0, 32, 32) and ds.split("val").class_counts() == {1: 0, 2: 0}


def test_manifest_is_indented_json_with_versions_and_the_box_convention(tiny):
    text = (tiny / "manifest.json").read_text()
    assert text.startswith('{\n  "format": "retina-unet-toy-data",\n  "format_version": 1,\n  "generator_version": ')
    m = json.loads(text)
    assert list(m) == ["format", "format_version", "generator_version", "numpy_version", "task", "seed",
                       "box_convention", "splits"]
    assert m["numpy_version"] == np.__version__ and m["seed"] == 0
    assert m["box_convention"] == ("(lo_0, ..., lo_{D-1}, hi_0, ..., hi_{D-1}) in array-axis order; "
                                   "mask pixels i..j span [i, j+1)")
    assert m["splits"]["train"]["class_counts"] == {"1": 2, "2": 4}  # labels 2 1 2 2 2 1


def test_write_dataset_creates_missing_parent_folders(tmp_path):
    out = write_dataset(_tiny_spec(), tmp_path / "a" / "b" / "ds", n_train=1, n_val=1, n_test=1, progress=False)
    assert out == tmp_path / "a" / "b" / "ds" and len(load_dataset(out).split("train")) == 1


def test_splits_are_written_into_a_hidden_sibling_first(tmp_path, monkeypatch):
    seen = []
    real = storage_mod._write_split

    def spy(spec, folder, *args):
        seen.append(folder.parent)
        return real(spec, folder, *args)

    monkeypatch.setattr(storage_mod, "_write_split", spy)
    write_dataset(_tiny_spec(), tmp_path / "ds", n_train=1, n_val=1, n_test=1, progress=False)
    (partial,) = set(seen)
    assert partial.parent == tmp_path and partial.name.startswith(".ds.partial-")
    assert sorted(os.listdir(tmp_path)) == ["ds"]


class _BarSpy:
    made: list = []

    def __init__(self, **kwargs):
        self.kwargs, self.updates, self.closed = kwargs, [], False
        _BarSpy.made.append(self)

    def update(self, n=1):
        self.updates.append(n)

    def close(self):
        self.closed = True


def test_write_dataset_progress_bar_counts_images_per_split(tmp_path, monkeypatch):
    import tqdm.auto

    monkeypatch.setattr(_BarSpy, "made", [])
    monkeypatch.setattr(tqdm.auto, "tqdm", _BarSpy)
    write_dataset(_tiny_spec(), tmp_path / "a", n_train=3, n_val=2, n_test=1)  # progress on by default
    write_dataset(_tiny_spec(3), tmp_path / "b", n_train=1, n_val=1, n_test=1, progress=False)
    a, b = _BarSpy.made
    assert a.kwargs == {"total": 6, "desc": "donuts_shape 2D", "unit": "img", "disable": False}
    assert a.updates == [3, 2, 1] and a.closed
    assert b.kwargs == {"total": 3, "desc": "donuts_shape 3D", "unit": "img", "disable": True}


def test_write_dataset_defaults_seed_0_and_pools_of_1000_500_1000(tmp_path, monkeypatch):
    calls = []

    def fake_split(spec, folder, split_seed, n, workers, pool, bar):
        calls.append((folder.name, split_seed, n))
        return {"n": n}

    monkeypatch.setattr(storage_mod, "_write_split", fake_split)
    write_dataset(_tiny_spec(), tmp_path / "d", progress=False)
    seeds = split_seeds(0)
    assert calls == [("train", seeds["train"], 1000), ("val", seeds["val"], 500), ("test", seeds["test"], 1000)]


@pytest.mark.parametrize("workers, counts, pooled", [
    (2, (40, 20, 5), True),   # 65 images, 2 threads: a pool of 2
    (3, (40, 20, 5), True),
    (2, (40, 20, 4), False),  # 64 images: not worth a pool
    (1, (40, 20, 5), False),  # one thread: no pool
])
def test_write_dataset_shares_one_thread_pool_across_the_splits(tmp_path, monkeypatch, workers, counts, pooled):
    made, calls = [], []
    real_pool = storage_mod.make_pool

    def spy_pool(w):
        made.append(w)
        return real_pool(w)

    def fake_split(spec, folder, split_seed, n, w, pool, bar):
        calls.append((w, pool))
        return {"n": n}

    monkeypatch.setattr(storage_mod, "make_pool", spy_pool)
    monkeypatch.setattr(storage_mod, "_write_split", fake_split)
    write_dataset(_tiny_spec(), tmp_path / "d", n_train=counts[0], n_val=counts[1], n_test=counts[2], workers=workers,
                  progress=False)
    assert made == ([workers] if pooled else [])
    assert [w for w, _ in calls] == [workers] * 3
    assert len({id(p) for _, p in calls}) == 1 and (calls[0][1] is not None) is pooled


def test_the_writer_hands_its_threads_to_the_generator(tmp_path, monkeypatch):
    seen = []
    real = storage_mod.iter_chunks

    def spy(spec, split_seed, n, **kwargs):
        seen.append(kwargs)
        return real(spec, split_seed, n, **kwargs)

    monkeypatch.setattr(storage_mod, "iter_chunks", spy)
    write_dataset(_tiny_spec(), tmp_path / "d", n_train=60, n_val=4, n_test=1, workers=2, progress=False)
    assert [kw["workers"] for kw in seen] == [2, 2, 2]
    assert all(type(kw["pool"]).__name__ == "ThreadPoolExecutor" for kw in seen)
    assert len({id(kw["pool"]) for kw in seen}) == 1


def test_chunks_reach_the_file_and_its_hash_in_order_when_the_disk_stalls(tmp_path, monkeypatch):
    """Chunks of 2 samples; the first data write and the first hash update of train/images.npy
    stall for 0.1 s. The file, its SHA-256 and the class counts still see every chunk once, in
    order (one writer thread and one hasher thread, FIFO), and at most 16 jobs are left waiting."""
    import hashlib
    import threading
    from types import SimpleNamespace

    import toy_data.generate as gen

    monkeypatch.setattr(gen, "default_chunk", lambda spec: 2)
    stalled = set()

    def stall_once(key):
        if threading.current_thread() is not threading.main_thread() and key not in stalled:
            stalled.add(key)
            time.sleep(0.1)

    class SlowFile:
        def __init__(self, path, mode):
            self._f, self._slow = open(path, mode), str(path).endswith("train/images.npy")  # noqa: SIM115

        def write(self, data):
            if self._slow:
                stall_once("write")
            return self._f.write(data)

        def close(self):
            self._f.close()

    class SlowSha:
        made = 0

        def __init__(self):
            self._h, self._slow = hashlib.sha256(), SlowSha.made == 0  # the first: train/images.npy
            SlowSha.made += 1

        def update(self, data):
            if self._slow:
                stall_once("hash")
            self._h.update(data)

        def hexdigest(self):
            return self._h.hexdigest()

    waiting = []
    real_throttle = storage_mod._throttle

    def throttle(writers, max_pending):
        writers = list(writers)
        real_throttle(writers, max_pending)
        waiting.append(sum(not f.done() for w in writers for f in w._pending))

    monkeypatch.setattr(storage_mod, "open", SlowFile, raising=False)
    monkeypatch.setattr(storage_mod, "hashlib", SimpleNamespace(sha256=SlowSha))
    monkeypatch.setattr(storage_mod, "_throttle", throttle)
    spec = _tiny_spec()
    out = write_dataset(spec, tmp_path / "d", seed=3, n_train=9, n_val=1, n_test=1, workers=1, progress=False)
    monkeypatch.undo()
    assert stalled == {"write", "hash"}
    ds = load_dataset(out)  # real checksums and class counts against the manifest
    ref = toy_data.generate_split(spec, split_seeds(3)["train"], 9)
    for key in ref:
        assert np.asarray(getattr(ds.split("train"), key)).tobytes() == ref[key].tobytes()
    assert len(waiting) == 7 and max(waiting) <= 16  # train 5 chunks, val 1, test 1


def test_npy_writer_refuses_to_close_short(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as a, ThreadPoolExecutor(1) as b:
        w = storage_mod._NpyWriter(tmp_path / "x.npy", (2, 3), np.dtype(np.float32), (a, b))
        w.append(np.zeros((1, 3), np.float32))
        with pytest.raises(RuntimeError, match=rf"^{re.escape(str(tmp_path / 'x.npy'))}: wrote 1 rows, expected 2$"):
            w.close()


def _rmtree_that_cannot_remove(monkeypatch):
    """shutil.rmtree on a folder it cannot remove (busy, permissions): raises unless told to ignore errors."""
    def rmtree(path, ignore_errors=False, **kwargs):
        if not ignore_errors:
            raise OSError(f"cannot remove {path}")

    monkeypatch.setattr(storage_mod.shutil, "rmtree", rmtree)


def test_overwrite_succeeds_when_the_old_copy_cannot_be_removed(tiny_copy, tmp_path, monkeypatch):
    _rmtree_that_cannot_remove(monkeypatch)
    write_dataset(_tiny_spec(), tiny_copy, seed=1, n_train=1, n_val=1, n_test=1, progress=False, overwrite=True)
    monkeypatch.undo()
    assert load_dataset(tiny_copy).manifest["seed"] == 1
    (left,) = [p.name for p in tmp_path.iterdir() if p.name != "ds"]
    assert re.fullmatch(r"\.ds\.old-[0-9a-f]{8}", left)  # the old copy, set aside under a hidden name


def test_a_failed_write_raises_its_own_error_even_if_cleanup_fails(tmp_path, monkeypatch):
    def broken_append(self, arr):
        raise RuntimeError("disk full")

    monkeypatch.setattr(storage_mod._NpyWriter, "append", broken_append)
    _rmtree_that_cannot_remove(monkeypatch)
    with pytest.raises(RuntimeError, match="^disk full$"):
        write_dataset(_tiny_spec(), tmp_path / "d", n_train=1, n_val=1, n_test=1, progress=False)


# --- loading: split arrays, and every refusal names the file and what it expected ----------------


def test_split_subset_bounds_and_contents(tiny):
    train = load_dataset(tiny, verify=False).split("train")
    whole = train.subset(6)
    assert whole.name == "train" and len(whole) == 6
    empty = train.subset(0)
    assert len(empty) == 0 and empty.class_counts() == {1: 0, 2: 0}
    sub = train.subset(2)
    assert sub.masks.tobytes() == train.masks[:2].tobytes() and sub.boxes.tobytes() == train.boxes[:2].tobytes()
    assert train.class_counts() == {1: 2, 2: 4}
    for bad in (True, "2", -1):
        with pytest.raises(ValueError, match=rf"^subset size must be an integer >= 0, got {re.escape(repr(bad))}$"):
            train.subset(bad)
    with pytest.raises(ValueError, match=r"^subset of 7 samples requested but the train split holds only 6; "
                                         r"regenerate with a larger pool \(e\.g\. --n-train 7\)$"):
        train.subset(7)


def test_dataset_repr_and_unknown_split(tiny):
    ds = load_dataset(tiny, verify=False)
    assert repr(ds) == f"ToyDataset({str(tiny)!r}, task='donuts_shape', dim=2, train=6, val=3, test=1)"
    with pytest.raises(KeyError) as e:
        ds.split("tests")
    assert e.value.args[0] == f"no split 'tests' in {tiny}; splits: train, val, test"


def _expect_error(path, message, **kwargs):
    with pytest.raises(DatasetError) as e:
        load_dataset(path, **kwargs)
    assert str(e.value) == message
    return e


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format="other"), "format: expected 'retina-unet-toy-data', found 'other'"),
    (lambda m: m.update(format_version=2), "format_version: expected 1, found 2"),
    (lambda m: m.update(splits={"train": m["splits"]["train"], "test": m["splits"]["test"]}),
     "splits: expected ['train', 'val', 'test'], found ['test', 'train']"),
    (lambda m: m.update(splits=None), "splits: expected ['train', 'val', 'test'], found None"),
    (lambda m: m["splits"]["val"].pop("class_counts"), "split 'val' lacks field 'class_counts'"),
    (lambda m: m["splits"]["val"]["arrays"].pop("masks"), "split 'val' lists no 'masks' array"),
    (lambda m: m["splits"]["val"].update(arrays=["images", "masks", "labels", "boxes"]),
     "malformed entry for split 'val' (TypeError: list indices must be integers or slices, not str)"),
    (lambda m: m["splits"]["val"]["arrays"]["images"].update(file="val/other.npy"),
     "val/images: file: expected 'val/images.npy', found 'val/other.npy'"),
    (lambda m: m["splits"]["val"]["arrays"]["images"].pop("shape"),
     "val/images: shape (from the task spec and n): expected (3, 32, 32), found ()"),
    (lambda m: m["splits"]["val"]["arrays"]["images"].update(dtype="<f8"), "val/images: dtype: expected '<f4', found '<f8'"),
])
def test_manifest_refusals_name_the_manifest_and_the_field(tiny_copy, edit, message):
    _edit_manifest(tiny_copy, edit)
    _expect_error(tiny_copy, f"{tiny_copy / 'manifest.json'}: {message}", verify=False)


def test_a_bad_task_spec_is_named(tiny_copy):
    _edit_manifest(tiny_copy, lambda m: m["task"].update(colour="red"))
    e = _expect_error(tiny_copy, f"{tiny_copy / 'manifest.json'}: bad task spec: unknown task spec field(s) ['colour']; "
                      "known fields: ['contrast', 'gap', 'hole_radius', 'margin', 'noise', 'objects_per_image', "
                      "'radii', 'shape', 'task']")
    assert e.value.__cause__ is None


def test_a_file_larger_than_listed_is_extra_data(tiny_copy):
    f = tiny_copy / "val" / "boxes.npy"
    size = f.stat().st_size
    with open(f, "ab") as fh:
        fh.write(b"\0" * 10)
    _expect_error(tiny_copy, f"{f}: size {size + 10} bytes, manifest says {size} (extra data; "
                  f"{storage_mod.REGENERATE})", verify=False)


def test_a_manifest_without_a_file_size_reports_none(tiny_copy):
    _edit_manifest(tiny_copy, lambda m: m["splits"]["val"]["arrays"]["boxes"].pop("bytes"))
    f = tiny_copy / "val" / "boxes.npy"
    f.write_bytes(b"")
    _expect_error(tiny_copy, f"{f}: size 0 bytes, manifest says None (extra data; {storage_mod.REGENERATE})",
                  verify=False)


def _replace_array(folder: Path, name: str, arr: np.ndarray, header_pad: int = 0) -> Path:
    """Write ``arr`` over ``folder/name`` (optionally with a padded header) and list the new size in
    the manifest (no checksum update: load with verify=False)."""
    f = folder / name
    with open(f, "wb") as fh:
        if header_pad:
            header = npy_header(arr, header_pad)
            fh.write(header)
            fh.write(np.ascontiguousarray(arr).tobytes())
        else:
            np.save(fh, arr)
    split, key = name.split("/")
    _edit_manifest(folder, lambda m: m["splits"][split]["arrays"][key.removesuffix(".npy")].update(bytes=f.stat().st_size))
    return f


def npy_header(arr: np.ndarray, total: int) -> bytes:
    """A version-1.0 .npy header of about ``total`` bytes (spaces pad the dictionary)."""
    d = repr({"descr": arr.dtype.str, "fortran_order": False, "shape": arr.shape})
    body = d + " " * (total - 10 - len(d) - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")


def test_array_files_whose_header_disagrees_are_named(tiny_copy):
    f = _replace_array(tiny_copy, "val/images.npy", np.zeros((3, 1024), np.float32))
    _expect_error(tiny_copy, f"{f}: array shape: expected (3, 32, 32), found (3, 1024)", verify=False)
    f = _replace_array(tiny_copy, "val/images.npy", np.zeros((3, 32, 32), np.int32))
    _expect_error(tiny_copy, f"{f}: array dtype: expected '<f4', found '<i4'", verify=False)


def test_unreadable_npy_files_are_refused(tiny_copy):
    f = tiny_copy / "val" / "images.npy"
    data = bytearray(f.read_bytes())
    data[:10] = b"not a npy!"
    f.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(f))}: not a readable \.npy file \("):
        load_dataset(tiny_copy, verify=False)


def test_an_npy_header_beyond_numpys_safety_limit_is_refused(tiny_copy):
    """numpy reads headers over 10000 bytes only when pickles are allowed: the loader never allows them."""
    f = _replace_array(tiny_copy, "val/images.npy", np.zeros((3, 32, 32), np.float32), header_pad=20000)
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(f))}: not a readable \.npy file \(.*large"):
        load_dataset(tiny_copy, verify=False)


def test_labels_outside_the_classes_are_counted_in_the_error(tiny_copy):
    _replace_array(tiny_copy, "val/labels.npy", np.array([[1], [2], [3]], np.int64))
    _expect_error(tiny_copy, f"{tiny_copy / 'val' / 'labels.npy'}: labels outside {{1, 2}}: counts [0, 1, 1, 1]",
                  verify=False)


def test_regeneration_check_of_split_seeds(tiny_copy):
    mpath = tiny_copy / "manifest.json"
    _edit_manifest(tiny_copy, lambda m: m["splits"]["val"].update(seed=None))
    _expect_error(tiny_copy, f"{mpath}: val seed: expected an integer >= 0, found None", splits=("val",))
    _edit_manifest(tiny_copy, lambda m: m["splits"]["val"].update(seed=0))  # a valid seed, but not this split's
    _expect_error(tiny_copy, f"{mpath}: val/images.npy sample 0 differs from what the manifest's task spec and seed 0 "
                  f"generate (generator {toy_data.GENERATOR_VERSION}); the manifest does not belong to these arrays",
                  splits=("val",))
    load_dataset(tiny_copy, verify=False)  # without verification the seed is not checked


def test_a_one_sample_split_is_checked_against_its_seed(tiny_copy):
    _edit_manifest(tiny_copy, lambda m: m["splits"]["test"].update(seed=m["splits"]["test"]["seed"] + 1))
    with pytest.raises(DatasetError, match=r"test/images\.npy sample 0 differs"):
        load_dataset(tiny_copy, splits=("test",))


# --- the preview picture -------------------------------------------------------------------------


@pytest.fixture
def drawn(monkeypatch):
    """The figures the preview saves (captured at savefig, then saved as usual)."""
    from matplotlib.figure import Figure

    figs = []
    real = Figure.savefig

    def savefig(self, *args, **kwargs):
        figs.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figs


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _extent(mask2d: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask2d)
    return rows.min(), rows.max(), cols.min(), cols.max()


def _check_panel(ax, image2d, mask2d, colour):
    """Grey image, nearest pixels; an orange 0.8 outline around the mask; a solid unfilled 0.8 box in
    the class colour over exactly the mask's pixels (pixel k spans [k - 0.5, k + 0.5])."""
    from matplotlib.colors import to_hex

    assert not ax.axison and ax.title.get_fontsize() == 7
    (im,) = ax.images
    assert im.get_cmap().name == "gray" and im.get_interpolation() == "nearest"
    assert np.array_equal(im.get_array(), image2d)
    (cs,) = ax.collections
    assert list(cs.levels) == [0.5] and to_hex(cs.get_edgecolor()[0]) == to_hex("orange")
    assert list(cs.get_linewidths()) == [0.8]
    r0, r1, c0, c1 = _extent(mask2d)
    verts = np.concatenate(cs.allsegs[0])  # the outline runs half a pixel outside the mask, at most
    assert len(verts) and verts[:, 0].min() >= c0 - 0.5 and verts[:, 0].max() <= c1 + 0.5
    assert verts[:, 1].min() >= r0 - 0.5 and verts[:, 1].max() <= r1 + 0.5
    (rect,) = ax.patches
    assert rect.get_xy() == (c0 - 0.5, r0 - 0.5)
    assert (rect.get_width(), rect.get_height()) == (c1 - c0 + 1, r1 - r0 + 1)
    assert not rect.get_fill() and rect.get_linestyle() == "-" and rect.get_linewidth() == 0.8
    assert to_hex(rect.get_edgecolor()) == to_hex(colour)


def test_preview_2d_rows_per_class_with_outlines_and_boxes(tiny, tmp_path, drawn):
    from toy_data.preview import write_preview

    out = write_preview(tiny, tmp_path / "p.png", per_class=2)
    (fig,) = drawn
    train = load_dataset(tiny).split("train")  # labels 2 1 2 2 2 1
    assert [ax.get_title() for ax in fig.axes] == ["#1 class 1", "#5 class 1", "#0 class 2", "#2 class 2"]
    for ax, i, colour in zip(fig.axes, (1, 5, 0, 2), ("cyan", "cyan", "magenta", "magenta"), strict=True):
        _check_panel(ax, np.asarray(train.images[i]), np.asarray(train.masks[i]), colour)
    assert fig._suptitle.get_text() == ("donuts_shape 2D 32x32, train split\n(rows: class 1, class 2; boxes: cyan: "
                                        "class 1, magenta: class 2; orange: mask outline)")
    assert fig._suptitle.get_fontsize() == 8
    assert _png_size(out) == (484, 594)  # 2 columns of 2.2 in, 2 rows of 2.7 in, at 110 dpi


def test_preview_3d_centre_slice_and_projection_per_example(tmp_path, drawn):
    from toy_data.preview import write_preview

    ds = write_dataset(_tiny_spec(3), tmp_path / "d3", seed=2, n_train=4, n_val=1, n_test=1, progress=False)
    out = write_preview(ds, tmp_path / "p3.png", per_class=2)
    (fig,) = drawn
    train = load_dataset(ds).split("train")  # labels 2 1 2 1
    titles = [ax.get_title() for ax in fig.axes]
    for k, (i, cls) in enumerate([(1, 1), (3, 1), (0, 2), (2, 2)]):
        image, mask = np.asarray(train.images[i]), np.asarray(train.masks[i])
        zs = np.nonzero(mask)[0]
        z = (zs.min() + zs.max() + 1) // 2  # the object's centre slice
        assert titles[2 * k: 2 * k + 2] == [f"#{i} class {cls} slice {z}", f"#{i} class {cls} max proj."]
        colour = "cyan" if cls == 1 else "magenta"
        _check_panel(fig.axes[2 * k], image[z], mask[z], colour)
        _check_panel(fig.axes[2 * k + 1], image.max(axis=0), mask.max(axis=0), colour)
    assert fig._suptitle.get_text().startswith("donuts_shape 3D 24x24x24, train split\n")
    assert _png_size(out) == (968, 594)  # 2 examples x 2 panels


def test_preview_defaults_four_training_examples_per_class_unverified(tiny_copy, tmp_path, drawn):
    from toy_data.preview import write_preview

    f = tiny_copy / "train" / "images.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01  # checksum mismatch: drawn anyway unless verify=True
    f.write_bytes(bytes(data))
    out = write_preview(tiny_copy, tmp_path / "p.png")
    (fig,) = drawn
    assert [ax.get_title() for ax in fig.axes] == ["#1 class 1", "#5 class 1", "", "",
                                                   "#0 class 2", "#2 class 2", "#3 class 2", "#4 class 2"]
    assert not any(ax.axison for ax in fig.axes)
    assert _png_size(out) == (968, 594)
    with pytest.raises(DatasetError, match="SHA-256 mismatch"):
        write_preview(tiny_copy, tmp_path / "q.png", verify=True)


def test_preview_of_one_example_per_class_and_another_split(tiny, tmp_path, drawn):
    from toy_data.preview import write_preview

    out = write_preview(tiny, tmp_path / "a" / "b" / "p.img", split="val", per_class=1)
    (fig,) = drawn
    assert fig._suptitle.get_text().startswith("donuts_shape 2D 32x32, val split\n")
    assert _png_size(out) == (242, 594)  # one column; missing folders made; a PNG whatever the suffix
    assert out == tmp_path / "a" / "b" / "p.img"
