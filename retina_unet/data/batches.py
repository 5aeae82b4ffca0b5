"""Batches from toy splits: seeded nested subsets, class-balanced training batches, patch crops,
lazy whole images for inference, the objects of an image; input checks.

Every random draw comes from an explicit generator: :func:`subset_indices` uses
``numpy.random.default_rng(seed)`` (stable across library versions), :class:`BatchSampler` a
``torch.Generator`` whose state is saved in checkpoints (resume draws the same batches).
Batches are built in the main process straight from the memory-mapped arrays (the toys are
small; worker processes would only add nondeterminism on a 2-core machine). No augmentation (paper).

A *split* is any object with array attributes ``images (n, *S)`` float, ``masks (n, *S)`` uint8
class map (or None), ``labels (n, K)`` int (0 or -1 = padding) and ``boxes (n, K, 2*D)``, e.g.
``toy_data.SplitArrays``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

PADDING_LABELS = (0, -1)


class InputError(ValueError):
    """Training input that cannot work with the model; raised before any training starts."""


def training_intensity_range(cfg) -> tuple[float, float]:
    """(low, high) input intensity a run of ``cfg`` trains on: its toy task's generator range
    (``toy_data.TaskSpec.intensity_range``: background [0, 1), objects + contrast). Recorded in every
    checkpoint as ``intensity_range`` so ``predict`` can refuse input on another scale (e.g. 0-255)."""
    import toy_data

    spec = toy_data.task_spec(cfg.task, dim=cfg.spatial_dims, **cfg.task_overrides)
    lo, hi = spec.intensity_range
    return float(lo), float(hi)


def subset_indices(pool_size: int, n: int, seed: int) -> np.ndarray:
    """The first ``n`` of a ``seed``-specific permutation of ``range(pool_size)``.

    Sizes are nested per seed: ``subset_indices(P, 50, s)`` is a prefix of ``subset_indices(P, 100, s)``.
    """
    if n < 1:
        raise InputError(f"empty training set: n_train={n}")
    if n > pool_size:
        raise InputError(f"n_train={n} is larger than the training pool ({pool_size} images)")
    return np.random.default_rng(seed).permutation(pool_size)[:n]


def image_objects(split, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (k, 2*D) float32, labels (k,) int64) of image ``i`` without padding entries."""
    labels = np.asarray(split.labels[i], dtype=np.int64).reshape(-1)
    boxes = np.asarray(split.boxes[i], dtype=np.float32).reshape(labels.shape[0], -1)
    keep = ~np.isin(labels, PADDING_LABELS)
    return boxes[keep], labels[keep]


def check_inputs(split, indices: Sequence[int], model, name: str = "train") -> None:
    """Raise :class:`InputError` with a clear message for input the model cannot train on.

    Checks: a non-empty index set; image dimensionality vs ``model.spatial_dims``; labels within
    1..num_classes (0/-1 = padding); masks present and within 0..num_classes when the model needs them.
    """
    if len(indices) == 0:
        raise InputError(f"empty {name} set: no images to train on")
    n = len(split.images)
    if int(np.max(indices)) >= n:
        raise InputError(f"{name} indices reach {int(np.max(indices))} but the split has {n} images")
    dims = split.images.ndim - 1
    if dims != model.spatial_dims:
        raise InputError(
            f"{name} images are {dims}D (array shape {tuple(split.images.shape)} = (n, *spatial)) but the "
            f"model is {model.spatial_dims}D (spatial_dims={model.spatial_dims})"
        )
    labels = np.asarray(split.labels)[np.asarray(indices)]
    real = labels[~np.isin(labels, PADDING_LABELS)]
    bad = real[(real < 1) | (real > model.num_classes)]
    if bad.size:
        raise InputError(
            f"{name} labels {sorted(set(bad.tolist()))[:5]} are outside the class range 1..{model.num_classes} "
            f"(0 and -1 mean padding)"
        )
    if getattr(model, "needs_masks", False):
        masks = getattr(split, "masks", None)
        if masks is None:
            raise InputError(f"model needs segmentation masks but the {name} split has none")
        if tuple(masks.shape) != tuple(split.images.shape):
            raise InputError(
                f"{name} masks have shape {tuple(masks.shape)}, images {tuple(split.images.shape)}"
            )
        sample = np.asarray(masks[int(indices[0])])
        if sample.max() > model.num_classes:
            raise InputError(
                f"{name} mask values reach {int(sample.max())} > num_classes={model.num_classes}"
            )


def _crop_start(lo: np.ndarray, hi: np.ndarray, size: np.ndarray, patch: np.ndarray, g: torch.Generator):
    """Per axis, a random crop start so that [lo, hi) lies inside [start, start + patch) if it fits."""
    start = np.zeros_like(size)
    for a in range(len(size)):
        s_min = max(0, int(np.ceil(hi[a])) - patch[a])
        s_max = min(int(np.floor(lo[a])), size[a] - patch[a])
        if s_min > s_max:  # object larger than the patch: centre on it
            centre = int((lo[a] + hi[a]) / 2)
            start[a] = int(np.clip(centre - patch[a] // 2, 0, size[a] - patch[a]))
        else:
            start[a] = s_min + int(torch.randint(s_max - s_min + 1, (1,), generator=g))
    return start


class BatchSampler:
    """Draws training batches: class-balanced image choice and optional patch crops.

    Args:
        split: training split (see module docstring). indices: images usable for training.
        batch_size: images per batch. num_classes: foreground classes.
        class_balanced: pick a class uniformly among those present, then an image containing it
            (MDT); otherwise images uniformly.
        patch_size: crop size per axis or None (whole images).
        fg_prob: probability that a crop contains a randomly chosen object of the image.
        seed: seeds the sampler's own ``torch.Generator``.
        with_masks: include the class-map masks in the targets.
    """

    def __init__(
        self,
        split,
        indices: Sequence[int],
        batch_size: int,
        num_classes: int,
        class_balanced: bool = True,
        patch_size: Sequence[int] | None = None,
        fg_prob: float = 0.5,
        seed: int = 0,
        with_masks: bool = True,
    ):
        self.split, self.indices = split, np.asarray(indices, dtype=np.int64)
        self.batch_size, self.fg_prob, self.with_masks = batch_size, fg_prob, with_masks
        self.shape = np.array(split.images.shape[1:])
        self.patch = None if patch_size is None else np.minimum(np.array(patch_size), self.shape)
        self.generator = torch.Generator().manual_seed(int(seed) + 7_919)  # distinct stream from init
        labels = np.asarray(split.labels)[self.indices].reshape(len(self.indices), -1)
        self.by_class = [np.where((labels == c).any(axis=1))[0] for c in range(1, num_classes + 1)]
        self.by_class = [ids for ids in self.by_class if ids.size] if class_balanced else []
        if class_balanced and not self.by_class:
            self.by_class = [np.arange(len(self.indices))]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def _pick(self) -> int:
        g = self.generator
        if self.by_class:
            pool = self.by_class[int(torch.randint(len(self.by_class), (1,), generator=g))]
            return int(self.indices[pool[int(torch.randint(len(pool), (1,), generator=g))]])
        return int(self.indices[int(torch.randint(len(self.indices), (1,), generator=g))])

    def sample(self, i: int) -> tuple[torch.Tensor, dict]:
        """Image ``i`` as ``(1, *P)`` tensor and its target dict, cropped when patches are on."""
        boxes, labels = image_objects(self.split, i)
        sl: tuple = ()  # the whole image
        if self.patch is not None:
            use_fg = len(labels) > 0 and float(torch.rand((), generator=self.generator)) < self.fg_prob
            if use_fg:
                k = int(torch.randint(len(labels), (1,), generator=self.generator))
                d = len(self.shape)
                start = _crop_start(boxes[k, :d], boxes[k, d:], self.shape, self.patch, self.generator)
            else:
                start = np.array(
                    [
                        int(torch.randint(int(s - p) + 1, (1,), generator=self.generator))
                        for s, p in zip(self.shape, self.patch, strict=False)
                    ]
                )
            sl = tuple(slice(int(s), int(s + p)) for s, p in zip(start, self.patch, strict=False))
            boxes, labels = crop_boxes(boxes, labels, start, self.patch)
        # copy the crop only (memmaps are read-only): a 320^2 image is 25x a 64^2 patch, and copying
        # whole images was ~6 ms of a ~55 ms Retina Net step (docs/speed.md)
        image = np.array(self.split.images[i][sl], dtype=np.float32)
        mask = np.array(self.split.masks[i][sl], dtype=np.uint8) if self.with_masks else None
        target = {
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
            "labels": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
        }
        if mask is not None:
            target["masks"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))
        return torch.from_numpy(np.ascontiguousarray(image))[None], target

    def next_batch(self) -> tuple[torch.Tensor, list[dict]]:
        """One batch: images ``(B, 1, *P)`` float32 and B target dicts."""
        items = [self.sample(self._pick()) for _ in range(self.batch_size)]
        return torch.stack([im for im, _ in items]), [t for _, t in items]


def crop_boxes(boxes: np.ndarray, labels: np.ndarray, start: np.ndarray, patch: np.ndarray):
    """Shift boxes into a crop at ``start`` of size ``patch``, clip, and drop those under 1 px per axis.

    (Clipping the box of a partly cropped disc slightly overestimates its visible extent on the
    other axis; acceptable for training crops.)
    """
    if len(boxes) == 0:
        return boxes, labels
    d = len(start)
    b = boxes.copy()
    b[:, :d] = np.clip(b[:, :d] - start, 0, patch)
    b[:, d:] = np.clip(b[:, d:] - start, 0, patch)
    keep = ((b[:, d:] - b[:, :d]) >= 1.0).all(axis=1)
    return b[keep], labels[keep]


class SplitImages:
    """Lazy ``(1, *S)`` float32 images ``indices`` of a split (a sequence for
    :func:`retina_unet.inference.predict_images`)."""

    def __init__(self, split, indices: Sequence[int] | None = None):
        self.split = split
        self.indices = list(range(len(split.images))) if indices is None else [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> np.ndarray:
        return np.array(self.split.images[self.indices[k]], dtype=np.float32)[None]


def split_targets(split, indices: Sequence[int]) -> list[dict]:
    """Ground truth of images ``indices``: ``{"boxes" (k, 2*D) float32, "labels" (k,) int64}`` tensors."""
    out = []
    for i in indices:
        b, lab = image_objects(split, int(i))
        out.append({"boxes": torch.from_numpy(b), "labels": torch.from_numpy(lab)})
    return out
