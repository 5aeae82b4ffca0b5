"""Dataset folders: atomic writing, manifest, checksums, memory-mapped loading.

Layout of a dataset folder::

    manifest.json                 task spec, seeds, counts, generator version, SHA-256 per file
    {train,val,test}/images.npy   float32 (n, *shape)
    {train,val,test}/masks.npy    uint8   (n, *shape)   0 background, else the object's class
    {train,val,test}/labels.npy   int64   (n, K)        class of each object
    {train,val,test}/boxes.npy    float32 (n, K, 2*D)   (lo..., hi...) in array-axis order

The folder is written under a temporary sibling name and renamed into place only when complete,
so a folder at the requested path always has every file and a manifest that checks out. Arrays are
streamed to disk chunk by chunk and hashed while written (no second read).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from .generate import (
    BOX_DTYPE,
    GENERATOR_VERSION,
    IMAGE_DTYPE,
    LABEL_DTYPE,
    MASK_DTYPE,
    generate_sample,
    iter_chunks,
    make_pool,
    resolve_workers,
)
from .spec import TaskSpec

FORMAT = "retina-unet-toy-data"
FORMAT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")
ARRAYS: tuple[str, ...] = ("images", "masks", "labels", "boxes")
BOX_CONVENTION = (
    "(lo_0, ..., lo_{D-1}, hi_0, ..., hi_{D-1}) in array-axis order; mask pixels i..j span [i, j+1)"
)
_DTYPES = {"images": IMAGE_DTYPE, "masks": MASK_DTYPE, "labels": LABEL_DTYPE, "boxes": BOX_DTYPE}
_HASH_BLOCK = 16 << 20
# How to fix a damaged folder, appended to every damaged-file error.
REGENERATE = "regenerate the dataset: python -m toy_data generate ... --overwrite, or delete the folder"


class DatasetError(ValueError):
    """A dataset folder is missing, incomplete, corrupted or inconsistent with its manifest."""


def split_seeds(seed: int) -> dict[str, int]:
    """Independent 64-bit seeds of the train, val and test streams, derived from one dataset seed."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    out = {}
    for k, name in enumerate(SPLITS):
        words = np.random.SeedSequence([seed, k]).generate_state(2, np.uint32)
        out[name] = int(words[0]) << 32 | int(words[1])
    return out


def expected_shapes(spec: TaskSpec, n: int) -> dict[str, tuple[int, ...]]:
    k, d = spec.objects_per_image, spec.dim
    return {"images": (n, *spec.shape), "masks": (n, *spec.shape), "labels": (n, k), "boxes": (n, k, 2 * d)}


# --- writing -------------------------------------------------------------------------------------


class _NpyWriter:
    """Streams a C-ordered ``.npy`` file of known shape and dtype and hashes every byte of it.

    ``append`` hands each chunk to two single-thread executors, one writing and one hashing, so
    disk writes, SHA-256 and the generation of the next chunk overlap (both release the GIL).
    Each executor runs its jobs in submission order, so the file and the hash see the same bytes.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, io: tuple[Executor, Executor]):
        self.path, self.shape, self.dtype = path, shape, dtype
        self.sha = hashlib.sha256()
        self._f = open(path, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._write_pool, self._hash_pool = io
        self._pending: list[Future] = []
        header = {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        npy_format.write_array_header_1_0(self, header)
        self.rows = 0

    def write(self, data: Any) -> None:  # used by numpy for the header
        self._f.write(data)
        self.sha.update(data)

    def append(self, arr: np.ndarray) -> None:
        buf = memoryview(np.ascontiguousarray(arr, dtype=self.dtype)).cast("B")
        still = []
        for f in self._pending:
            if f.done():
                f.result()  # surface an I/O error now
            else:
                still.append(f)
        self._pending = still
        self._pending.append(self._write_pool.submit(self._f.write, buf))
        self._pending.append(self._hash_pool.submit(self.sha.update, buf))
        self.rows += len(arr)

    def close(self) -> dict[str, Any]:
        for f in self._pending:
            f.result()
        self._f.close()
        if self.rows != self.shape[0]:
            raise RuntimeError(f"{self.path}: wrote {self.rows} rows, expected {self.shape[0]}")
        return {
            "shape": list(self.shape),
            "dtype": self.dtype.str,
            "bytes": self.path.stat().st_size,
            "sha256": self.sha.hexdigest(),
        }

    def abort(self) -> None:
        for f in self._pending:
            f.cancel()
        wait(self._pending)
        self._f.close()


def write_dataset(
    spec: TaskSpec,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    n_train: int = 1000,
    n_val: int = 500,
    n_test: int = 1000,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Generate the train pool, validation and test splits of ``spec`` into ``out_dir`` atomically.

    Split ``s`` uses seed ``split_seeds(seed)[s]``; its sample i is ``generate_sample(spec, that, i)``.
    Returns the folder's path. Raises ``FileExistsError`` when it exists and ``overwrite`` is False.
    """
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for name, n in counts.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n_{name} must be an integer >= 0, got {n!r}")
    seeds = split_seeds(seed)
    workers = resolve_workers(workers)
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    pool = make_pool(workers) if workers > 1 and sum(counts.values()) > 64 else None
    try:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=sum(counts.values()), desc=f"{spec.task} {spec.dim}D", unit="img", disable=not progress
        )
        splits = {}
        for name in SPLITS:
            splits[name] = _write_split(spec, tmp / name, seeds[name], counts[name], workers, pool, bar)
            splits[name]["seed"] = seeds[name]
        bar.close()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "generator_version": GENERATOR_VERSION,
            "numpy_version": np.__version__,
            "task": spec.to_dict(),
            "seed": seed,
            "box_convention": BOX_CONVENTION,
            "splits": splits,
        }
        # The manifest is written last: a folder without one is never complete.
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():  # overwrite: move the old folder aside, then swap in the new one
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return out


def _write_split(spec, folder: Path, split_seed: int, n: int, workers: int, pool, bar) -> dict[str, Any]:
    folder.mkdir()
    shapes = expected_shapes(spec, n)
    with ThreadPoolExecutor(1) as write_pool, ThreadPoolExecutor(1) as hash_pool:
        io = (write_pool, hash_pool)
        writers = {key: _NpyWriter(folder / f"{key}.npy", shapes[key], _DTYPES[key], io) for key in ARRAYS}
        try:
            class_counts = np.zeros(3, np.int64)
            for chunk in iter_chunks(spec, split_seed, n, workers=workers, pool=pool):
                for key in ARRAYS:
                    writers[key].append(chunk[key])
                class_counts += np.bincount(chunk["labels"].ravel(), minlength=3)
                bar.update(len(chunk["labels"]))
                _throttle(writers.values(), max_pending=16)
            files = {key: {"file": f"{folder.name}/{key}.npy", **writers[key].close()} for key in ARRAYS}
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
    return {"n": n, "class_counts": {"1": int(class_counts[1]), "2": int(class_counts[2])}, "arrays": files}


def _throttle(writers, max_pending: int) -> None:
    """Wait while too many chunks are queued for writing/hashing (bounds memory when I/O is slower)."""
    pending = [f for w in writers for f in w._pending if not f.done()]
    if len(pending) > max_pending:
        wait(pending[: len(pending) - max_pending])


# --- loading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitArrays:
    """One split's arrays (memory-mapped, read-only). ``len()`` is the number of samples."""

    name: str
    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int) -> SplitArrays:
        """The first ``n`` samples (nested training sets: a smaller set is a prefix of a larger one)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"subset size must be an integer >= 0, got {n!r}")
        if n > len(self):
            raise ValueError(
                f"subset of {n} samples requested but the {self.name} split holds only {len(self)}; "
                f"regenerate with a larger pool (e.g. --n-train {n})"
            )
        return SplitArrays(self.name, self.images[:n], self.masks[:n], self.labels[:n], self.boxes[:n])

    def class_counts(self) -> dict[int, int]:
        c = np.bincount(np.asarray(self.labels).ravel(), minlength=3)
        return {1: int(c[1]), 2: int(c[2])}


class ToyDataset:
    """A loaded dataset folder: ``.spec``, ``.manifest``, ``.split(name)``."""

    def __init__(self, path: Path, manifest: dict[str, Any], spec: TaskSpec, splits: dict[str, SplitArrays]):
        self.path, self.manifest, self.spec = path, manifest, spec
        self._splits = splits

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(self._splits)

    def split(self, name: str) -> SplitArrays:
        if name not in self._splits:
            raise KeyError(f"no split {name!r} in {self.path}; splits: {', '.join(self._splits)}")
        return self._splits[name]

    def verify(self) -> None:
        """Check every array file's SHA-256 against the manifest (raises :class:`DatasetError`)."""
        for split in self.manifest["splits"].values():
            for entry in split["arrays"].values():
                _check_sha(self.path, entry)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self._splits.items())
        return f"ToyDataset({str(self.path)!r}, task={self.spec.task!r}, dim={self.spec.dim}, {sizes})"


def load_dataset(
    path: str | os.PathLike, verify: bool = True, splits: tuple[str, ...] | None = None
) -> ToyDataset:
    """Open a dataset folder, validating its manifest, files and (``verify=True``) checksums.

    ``splits`` opens (and checks the files of) only those splits, e.g. ``("test",)`` for evaluation,
    so a damaged train split does not stop a reader that never touches it; default all three.
    Raises :class:`DatasetError` naming the file and the expected vs found value when anything
    is missing, truncated, corrupted or inconsistent.
    """
    wanted = SPLITS if splits is None else tuple(splits)
    unknown = [s for s in wanted if s not in SPLITS]
    if unknown:
        raise ValueError(f"splits: expected names from {list(SPLITS)}, got {unknown}")
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise DatasetError(
            f"{mpath}: missing; complete dataset folders always have one (an interrupted write, or not a dataset)"
        )
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{mpath}: not valid JSON ({e})") from None
    _expect(mpath, "format", manifest.get("format"), FORMAT)
    _expect(mpath, "format_version", manifest.get("format_version"), FORMAT_VERSION)
    try:
        spec = TaskSpec.from_dict(manifest["task"])
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{mpath}: bad task spec: {e}") from None
    splits_meta = manifest.get("splits")
    if not isinstance(splits_meta, dict) or set(splits_meta) != set(SPLITS):
        found = sorted(splits_meta) if isinstance(splits_meta, dict) else splits_meta
        raise DatasetError(f"{mpath}: splits: expected {list(SPLITS)}, found {found}")
    splits = {}
    for name in wanted:
        try:
            splits[name] = _load_split(root, mpath, spec, name, splits_meta[name], verify)
        except (KeyError, TypeError, AttributeError) as e:
            raise DatasetError(
                f"{mpath}: malformed entry for split {name!r} ({type(e).__name__}: {e})"
            ) from None
    return ToyDataset(root, manifest, spec, splits)


def _load_split(root: Path, mpath: Path, spec: TaskSpec, name: str, meta: Any, verify: bool) -> SplitArrays:
    try:
        n = meta["n"]
        arrays_meta = meta["arrays"]
        counts = meta["class_counts"]
    except (KeyError, TypeError) as e:
        raise DatasetError(f"{mpath}: split {name!r} lacks field {e}") from None
    shapes = expected_shapes(spec, n)
    arrays = {}
    for key in ARRAYS:
        if key not in arrays_meta:
            raise DatasetError(f"{mpath}: split {name!r} lists no {key!r} array")
        entry = arrays_meta[key]
        where = f"{mpath}: {name}/{key}"
        _expect(where, "file", entry.get("file"), f"{name}/{key}.npy")
        _expect(where, "shape (from the task spec and n)", tuple(entry.get("shape", ())), shapes[key])
        _expect(where, "dtype", entry.get("dtype"), _DTYPES[key].str)
        fpath = root / entry["file"]
        if not fpath.is_file():
            raise DatasetError(f"{fpath}: missing (listed in the manifest; {REGENERATE})")
        size = fpath.stat().st_size
        if size != entry.get("bytes"):
            raise DatasetError(
                f"{fpath}: size {size} bytes, manifest says {entry.get('bytes')} "
                f"({'truncated' if size < entry.get('bytes', 0) else 'extra data'}; {REGENERATE})"
            )
        if verify:
            _check_sha(root, entry)
        try:
            arr = np.load(fpath, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DatasetError(f"{fpath}: not a readable .npy file ({e}; {REGENERATE})") from None
        _expect(fpath, "array shape", arr.shape, shapes[key])
        _expect(fpath, "array dtype", arr.dtype.str, _DTYPES[key].str)
        arrays[key] = arr
    found = np.bincount(np.asarray(arrays["labels"]).ravel(), minlength=3)
    if found.size > 3 or found[0] != 0:
        raise DatasetError(f"{root / name / 'labels.npy'}: labels outside {{1, 2}}: counts {found.tolist()}")
    found_counts = {"1": int(found[1]), "2": int(found[2])}
    if found_counts != counts:
        raise DatasetError(f"{mpath}: {name} class_counts {counts} but labels.npy holds {found_counts}")
    if verify and n > 0:
        _check_regenerates(mpath, spec, name, meta.get("seed"), arrays)
    return SplitArrays(name, **arrays)


def _check_regenerates(
    mpath: Path, spec: TaskSpec, name: str, seed: Any, arrays: dict[str, np.ndarray]
) -> None:
    """Sample 0 must be what the manifest's spec and seed generate (catches a mismatched manifest)."""
    if not isinstance(seed, int) or seed < 0:
        raise DatasetError(f"{mpath}: {name} seed: expected an integer >= 0, found {seed!r}")
    ref = generate_sample(spec, seed, 0)
    for key, value in (
        ("images", ref.image),
        ("masks", ref.mask),
        ("labels", ref.labels),
        ("boxes", ref.boxes),
    ):
        if not np.array_equal(arrays[key][0], value):
            raise DatasetError(
                f"{mpath}: {name}/{key}.npy sample 0 differs from what the manifest's task spec and seed "
                f"{seed} generate (generator {GENERATOR_VERSION}); the manifest does not belong to these arrays"
            )


def _check_sha(root: Path, entry: dict[str, Any]) -> None:
    fpath = root / entry["file"]
    sha = hashlib.sha256()
    with open(fpath, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            sha.update(block)
    if sha.hexdigest() != entry.get("sha256"):
        raise DatasetError(
            f"{fpath}: SHA-256 mismatch: manifest says {entry.get('sha256')}, file has {sha.hexdigest()} "
            f"(the file was modified or corrupted; {REGENERATE})"
        )


def _expect(where: Any, what: str, found: Any, expected: Any) -> None:
    if found != expected:
        raise DatasetError(f"{where}: {what}: expected {expected!r}, found {found!r}")
