"""``predict`` inputs: a folder of ``.npy`` images / volumes, checked against the model first.

Accepted per file (``D`` = the checkpoint's spatial dims, ``C`` = its ``in_channels``):

- shape ``(*S)`` (only when C = 1) or ``(C, *S)`` with ``len(S) == D``: ``(H, W)`` / ``(C, H, W)``
  in 2D, ``(D, H, W)`` / ``(C, D, H, W)`` in 3D; every spatial axis non-empty;
- dtype float (16/32/64 bit) or integer (signed or unsigned): converted to float32. Bool, complex,
  string, structured and object arrays are rejected (nothing is unpickled);
- finite values only (no NaN / inf);
- intensities on the scale the model was trained on (the intensity contract): after multiplying by
  ``--intensity-scale`` (default 1), every file's values must lie within the checkpoint's
  ``intensity_range`` widened by its width on each side (toy models: [0, 1.2] -> [-1.2, 2.4]).
  An 8-bit image (0-255) fed to a toy model is refused with the scale that fixes it (1/255), not
  silently predicted as garbage.

Every file is checked before anything runs; all problems are reported together.

An optional ``ground_truth.json`` in the folder (written by :func:`export_toy_inputs`) gives the
boxes and labels per image: overlays draw them and ``predict`` evaluates against them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retina_unet.atomic_io import atomic_dir

GROUND_TRUTH = "ground_truth.json"
GT_FORMAT = "retina_unet.ground_truth/1"
ACCEPTED_KINDS = {"f": "float", "i": "signed integer", "u": "unsigned integer"}
MAX_LISTED = 10


@dataclass(frozen=True)
class InputImage:
    """One validated input file: ``stem`` (file name without ``.npy``), ``path``, the stored
    ``shape`` and ``dtype``, and the ``spatial`` shape it is predicted at."""

    stem: str
    path: Path
    shape: tuple[int, ...]
    dtype: str
    spatial: tuple[int, ...]
    scale: float = 1.0  # --intensity-scale: multiplies the stored values

    def load(self) -> np.ndarray:
        """The image as float32 ``(C, *S)``, times ``scale``."""
        arr = np.load(self.path, allow_pickle=False)
        arr = np.asarray(arr, dtype=np.float32)
        if self.scale != 1.0:
            arr = arr * np.float32(self.scale)
        return arr if arr.ndim == len(self.spatial) + 1 else arr[None]


def _layouts(dims: int, channels: int) -> str:
    s = "(H, W)" if dims == 2 else "(D, H, W)"
    cs = "(C, H, W)" if dims == 2 else "(C, D, H, W)"
    return f"{s} or {cs} with C = {channels}" if channels == 1 else f"{cs} with C = {channels}"


def check_array(name: str, arr: np.ndarray, spatial_dims: int, in_channels: int) -> tuple[int, ...]:
    """Check one array against the model; returns its spatial shape or raises ``ValueError``.

    Args:
        name: how to call the array in messages (e.g. the file path).
        arr: ``(*S)`` or ``(C, *S)``. spatial_dims: 2 or 3. in_channels: the model's C.
    """
    kind = arr.dtype.kind
    if kind not in ACCEPTED_KINDS:
        raise ValueError(
            f"{name}: dtype {arr.dtype} is not accepted; expected a float or integer array "
            f"(bool, complex, string and object arrays are rejected)"
        )
    expected = _layouts(spatial_dims, in_channels)
    if arr.ndim == spatial_dims + 1:
        spatial = tuple(arr.shape[1:])
        if arr.shape[0] != in_channels:
            hint = ""
            if spatial_dims == 2 and in_channels == 1:
                hint = " (a 3D volume? this checkpoint is 2D)"
            raise ValueError(
                f"{name}: shape {arr.shape} read as channels-first has {arr.shape[0]} channels, but the "
                f"checkpoint's model takes in_channels={in_channels}{hint}; expected {expected}"
            )
    elif arr.ndim == spatial_dims and in_channels == 1:
        spatial = tuple(arr.shape)
    else:
        raise ValueError(
            f"{name}: shape {arr.shape} has {arr.ndim} dims, but this {spatial_dims}D checkpoint expects "
            f"{expected}"
        )
    if any(s < 1 for s in spatial):
        raise ValueError(f"{name}: empty spatial axis in shape {arr.shape}; expected {expected}")
    if kind == "f" and not np.isfinite(arr).all():
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        raise ValueError(f"{name}: contains {n_nan} NaN and {n_inf} inf values; expected finite values only")
    return spatial


def _header_dtype(path: Path) -> np.dtype:
    """The dtype recorded in a ``.npy`` header (``ValueError`` when the file is not a .npy)."""
    fmt = np.lib.format
    with open(path, "rb") as fh:
        version = fmt.read_magic(fh)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        return read(fh)[2]


def check_intensities(items: list[InputImage], intensity_range: tuple[float, float] | None) -> None:
    """Refuse inputs far outside the training intensity range (see the module doc), in one line.

    The tolerance is one range width on each side: noise, other contrasts or a slightly different
    normalisation pass; another scale (8-bit, 12-bit, Hounsfield units) does not.
    """
    if intensity_range is None or not items:
        return
    lo, hi = intensity_range
    width = max(hi - lo, 1e-6)
    found_lo, found_hi, worst = math.inf, -math.inf, None
    for it in items:
        arr = np.load(it.path, mmap_mode="r", allow_pickle=False)
        a_lo, a_hi = float(arr.min()) * it.scale, float(arr.max()) * it.scale
        a_lo, a_hi = min(a_lo, a_hi), max(a_lo, a_hi)
        if a_lo < lo - width or a_hi > hi + width:
            if worst is None or a_hi - a_lo > found_hi - found_lo:
                worst = it
        found_lo, found_hi = min(found_lo, a_lo), max(found_hi, a_hi)
    if worst is None:
        return
    scale = items[0].scale
    span = (found_hi - found_lo) / scale if scale else math.inf
    hint = f"--intensity-scale {(hi - lo) / span:.6g}" if span > 0 else "rescale them"
    if found_lo / scale >= 0 and 200 <= found_hi / scale <= 255:
        hint = f"8-bit images: --intensity-scale {1 / 255:.6g} (= 1/255)"
    raise ValueError(
        f"INPUT_DIR: intensities {found_lo:g}..{found_hi:g} (e.g. {worst.path.name}"
        f"{'' if scale == 1 else f', after --intensity-scale {scale:g}'}) are far outside the range the "
        f"model was trained on, {lo:g}..{hi:g}; scale the images into it ({hint}); nothing was run"
    )


def scan_inputs(
    folder: str | Path, spatial_dims: int, in_channels: int, intensity_scale: float = 1.0
) -> list[InputImage]:
    """Validate every ``*.npy`` in ``folder`` (sorted by name) against the model; see the module doc.

    Raises:
        FileNotFoundError: ``folder`` does not exist. ValueError: no ``.npy`` files, or any file
        that fails a check (all failures are listed, up to 10).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"INPUT_DIR: no folder at {folder}")
    files = sorted(p for p in folder.glob("*.npy") if p.is_file())
    if not files:
        raise ValueError(f"INPUT_DIR: {folder} holds no .npy files; expected one image or volume per file")
    items, problems = [], []
    for path in files:
        try:
            if _header_dtype(path).hasobject:  # checked from the header: nothing is unpickled
                problems.append(f"{path}: object arrays are rejected; expected a float or integer array")
                continue
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            problems.append(f"{path}: not a readable .npy file ({exc})")
            continue
        try:
            spatial = check_array(str(path), arr, spatial_dims, in_channels)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        items.append(InputImage(path.stem, path, tuple(arr.shape), str(arr.dtype), spatial, intensity_scale))
    if problems:
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise ValueError(
            f"INPUT_DIR: {len(problems)} of {len(files)} input files cannot be used (nothing was run):\n  "
            + "\n  ".join(problems[:MAX_LISTED])
            + more
        )
    return items


def read_ground_truth(folder: str | Path, items: list[InputImage], spatial_dims: int) -> dict | None:
    """``{stem: {"boxes": (G, 2*D) float32, "labels": (G,) int64}}`` from ``folder/ground_truth.json``,
    or None when there is no such file. Every input must have an entry and vice versa."""
    path = Path(folder) / GROUND_TRUTH
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        entries = doc["images"]
        if doc.get("spatial_dims") != spatial_dims:
            raise ValueError(
                f"spatial_dims is {doc.get('spatial_dims')!r}, the checkpoint is {spatial_dims}D"
            )
        out = {}
        for stem, e in entries.items():
            labels = np.asarray(e["labels"], dtype=np.int64).reshape(-1)
            boxes = np.asarray(e["boxes"], dtype=np.float32).reshape(len(labels), 2 * spatial_dims)
            out[stem] = {"boxes": boxes, "labels": labels}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{path}: not a valid ground-truth file ({exc}); expected {{'spatial_dims': {spatial_dims}, "
            f"'images': {{stem: {{'boxes': [[lo.., hi..], ...], 'labels': [...]}}}}}}"
        ) from exc
    stems = {it.stem for it in items}
    missing, extra = sorted(stems - set(out)), sorted(set(out) - stems)
    if missing or extra:
        raise ValueError(
            f"{path}: its images do not match the .npy files: no entry for {missing[:5]}, "
            f"entries without a file {extra[:5]}"
        )
    return out


def export_toy_inputs(
    cfg,
    out: str | Path,
    n: int,
    split: str = "test",
    data_root: str | Path | None = None,
    overwrite: bool = False,
    uint8: bool = False,
) -> Path:
    """Write the first ``n`` images of the run's toy ``split`` as ``<split>_0000.npy``, ... (float32
    ``(*S)``) plus ``ground_truth.json`` (our box convention) into the folder ``out``, atomically.

    ``uint8=True`` stores them as 8-bit images instead: ``round(x / high * 255)`` with ``high`` the
    top of the training intensity range (1.2 for the toys), i.e. what a user's 8-bit export of the
    same pixels looks like; ``predict --intensity-scale high/255`` maps them back (``ground_truth.json``
    records ``intensity_scale``).

    Args:
        cfg: the run's :class:`~retina_unet.training.TrainConfig` (which task, dims, data seed).
        n: how many images (at most the split's size). split: "train", "val" or "test".
        data_root: the toy dataset cache (default: the training default).
    """
    from retina_unet.data import DEFAULT_DATA_ROOT, ensure_dataset, image_objects

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"--n: expected an integer >= 1, got {n!r}")
    dataset = ensure_dataset(cfg, data_root or DEFAULT_DATA_ROOT, splits=(split,))
    sp = dataset.split(split)
    high = dataset.spec.intensity_range[1]
    n = min(n, len(sp.images))
    width = max(4, len(str(n - 1)))
    gt = {
        "format": GT_FORMAT,
        "box_convention": "ours",
        "spatial_dims": cfg.spatial_dims,
        "task": cfg.task,
        "split": split,
        "dataset": str(dataset.path),
        "dtype": "uint8" if uint8 else "float32",
        "intensity_scale": high / 255 if uint8 else 1.0,  # multiply the stored values by this
        "images": {},
    }
    with atomic_dir(out, overwrite) as tmp:
        for i in range(n):
            stem = f"{split}_{i:0{width}d}"
            image = np.asarray(sp.images[i], dtype=np.float32)
            if uint8:
                image = np.clip(np.rint(image / high * 255), 0, 255).astype(np.uint8)
            np.save(tmp / f"{stem}.npy", image)
            boxes, labels = image_objects(sp, i)
            gt["images"][stem] = {"boxes": boxes.tolist(), "labels": labels.tolist(), "index": i}
        (tmp / GROUND_TRUTH).write_text(json.dumps(gt, indent=1) + "\n")
    return Path(out)
