"""The detector seam: the interface every model implements, and the input checks they share.

``Detector.losses(images, targets)`` trains, ``Detector.predict(images)`` infers. Images are
``(B, C, *S)`` float with ``len(S) == spatial_dims``; targets are per-image dicts with "boxes"
``(K, 2*D)`` (lo..., hi...), "labels" ``(K,)`` int64 in 1..num_classes and, for models with
``needs_masks``, "masks" ``(*S)`` uint8 class maps (0 = background, c = class c). Every check runs
before any compute and names the argument and what was expected. Spatial sizes that are not a
multiple of ``required_multiple`` are padded inside the models (``ModelConfig.pad_to_multiple``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from retina_unet.models.config import ModelConfig
from retina_unet.nn.backbone import ResNetFPN


def backbone_for(cfg: ModelConfig, min_level: int) -> ResNetFPN:
    """The ResNet-FPN of ``cfg`` (its encoder and FPN settings) with pyramid levels P``min_level``..P5:
    one place where a model's backbone settings reach ``ResNetFPN``."""
    return ResNetFPN(
        cfg.spatial_dims,
        cfg.in_channels,
        cfg.start_filters,
        cfg.blocks,
        cfg.fpn_channels,
        cfg.norm,
        cfg.strides,
        min_level=min_level,
        fine_channels=cfg.fine_channels,
        stem_kernel=cfg.stem_kernel,
    )


def reads_masks(model) -> bool:
    """Whether ``model`` (a detector or its class) trains on segmentation masks: a mask head
    (``needs_masks``), a segmentation loss (``has_segmentation``), or both. A model that declares
    neither flag is taken to need them (the safe side: its batches carry masks)."""
    return bool(getattr(model, "needs_masks", True) or getattr(model, "has_segmentation", False))


def padding_to_multiple(size: Sequence[int], multiple: Sequence[int]) -> list[int]:
    """Per axis, how much :meth:`Detector.pad` adds at the high end so that ``size`` becomes a
    multiple of ``multiple``."""
    return [(-int(s)) % int(m) for s, m in zip(size, multiple, strict=True)]


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    """The channels-last memory format of ``(B, C, *S)`` tensors with ``spatial_dims`` axes."""
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


class Detector(nn.Module):
    """Base class of every model. Subclasses set ``name``, ``needs_masks``, ``has_segmentation``,
    ``required_multiple`` (per-axis input size multiple) and implement ``losses`` and ``predict``."""

    name: str = "detector"
    needs_masks: bool = False
    has_segmentation: bool = False
    # segmentation mode when ``cfg.seg_classes`` is None (MDT's setting for the model)
    default_seg_classes: str = "per_class"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if self.has_segmentation and cfg.seg_classes is None:
            cfg = cfg.replace(seg_classes=self.default_seg_classes)  # recorded resolved in model.cfg
        self.cfg = cfg
        self.spatial_dims = cfg.spatial_dims
        self.num_classes = cfg.num_classes
        self.required_multiple: tuple[int, ...] = (1,) * cfg.spatial_dims

    # --- the seam ---------------------------------------------------------------------------------
    def losses(self, images: torch.Tensor, targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        """Loss terms and their total under "loss" (all finite scalars)."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list[dict]:
        """Per image: "boxes" (P, 2D) float32, "scores" (P,) float32, "labels" (P,) int64 in 1..C,
        and "seg" (K, *S) float32 softmax probabilities when ``has_segmentation`` (channel 0 =
        background; K = 2 with ``cfg.seg_classes == "binary"``, else C+1)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, targets: Sequence[dict] | None = None):
        """Losses when ``targets`` are given, else predictions."""
        return self.losses(images, targets) if targets is not None else self.predict(images)

    # --- input checks -----------------------------------------------------------------------------
    def check_images(self, images: torch.Tensor) -> None:
        d = self.spatial_dims
        if not isinstance(images, torch.Tensor):
            raise TypeError(
                f"{self.name}: images must be a torch.Tensor (B, C, *S), got {type(images).__name__}"
            )
        if images.dim() != d + 2:
            raise ValueError(
                f"{self.name}: images must have shape (B, C, *S) with {d} spatial dims, i.e. {d + 2} dims "
                f"(spatial_dims={d}), got shape {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise TypeError(f"{self.name}: images must be a floating-point tensor, got {images.dtype}")
        if images.shape[1] != self.cfg.in_channels:
            raise ValueError(
                f"{self.name}: images have {images.shape[1]} channels (shape {tuple(images.shape)}), "
                f"expected in_channels={self.cfg.in_channels}"
            )
        if images.shape[0] == 0:
            raise ValueError(f"{self.name}: images is an empty batch (shape {tuple(images.shape)})")
        size = tuple(images.shape[2:])
        if not self.cfg.pad_to_multiple and any(
            s % m for s, m in zip(size, self.required_multiple, strict=True)
        ):
            raise ValueError(
                f"{self.name}: image spatial size {size} must be a multiple of {self.required_multiple} per axis "
                f"(the network's deepest stride); pad or crop the images, or set pad_to_multiple=True"
            )

    def check_targets(self, images: torch.Tensor, targets: Sequence[dict]) -> None:
        # The usual case, valid targets, in a few tensor ops for the whole batch; anything else
        # goes through the per-image checks below, which raise the error of the first bad image.
        if not self._targets_valid(images, targets):
            self._check_targets_per_image(images, targets)

    def _targets_valid(self, images: torch.Tensor, targets: Sequence[dict]) -> bool:
        """True iff :meth:`_check_targets_per_image` would pass (the same conditions, batched)."""
        d, c = self.spatial_dims, self.num_classes
        if not isinstance(targets, list | tuple) or len(targets) != images.shape[0]:
            return False
        size = tuple(images.shape[2:])
        keys = ("boxes", "labels") + (("masks",) if self.needs_masks else ())
        for t in targets:
            if any(key not in t for key in keys):
                return False
            boxes, labels = t["boxes"], t["labels"]
            if boxes.dim() != 2 or boxes.shape[1] != 2 * d or labels.shape != (boxes.shape[0],):
                return False
            if labels.is_floating_point() or labels.dtype == torch.bool:
                return False
            if self.needs_masks and (tuple(t["masks"].shape) != size or t["masks"].is_floating_point()):
                return False
        try:  # (mixed devices or dtypes that do not concatenate: left to the per-image checks)
            labels = torch.cat([t["labels"] for t in targets])
            if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > c):
                return False
            if not torch.isfinite(torch.cat([t["boxes"] for t in targets])).all():
                return False
            if self.needs_masks and math.prod(size) and int(torch.stack([t["masks"] for t in targets]).max()) > c:
                return False
        except (RuntimeError, TypeError):
            return False
        return True

    def _check_targets_per_image(self, images: torch.Tensor, targets: Sequence[dict]) -> None:
        d, c = self.spatial_dims, self.num_classes
        if not isinstance(targets, list | tuple) or len(targets) != images.shape[0]:
            n = len(targets) if isinstance(targets, list | tuple) else type(targets).__name__
            raise ValueError(
                f"{self.name}: targets must be a list with one dict per image ({images.shape[0]}), got {n}"
            )
        size = tuple(images.shape[2:])
        for i, t in enumerate(targets):
            for key in ("boxes", "labels") + (("masks",) if self.needs_masks else ()):
                if key not in t:
                    extra = " (this model trains with segmentation masks)" if key == "masks" else ""
                    raise ValueError(f"{self.name}: targets[{i}] is missing {key!r}{extra}")
            boxes, labels = t["boxes"], t["labels"]
            if boxes.dim() != 2 or boxes.shape[1] != 2 * d:
                raise ValueError(
                    f"{self.name}: targets[{i}]['boxes'] must have shape (K, {2 * d}), got {tuple(boxes.shape)}"
                )
            if labels.shape != (boxes.shape[0],):
                raise ValueError(
                    f"{self.name}: targets[{i}]['labels'] must have shape ({boxes.shape[0]},) to match the boxes, "
                    f"got {tuple(labels.shape)}"
                )
            if labels.is_floating_point() or labels.dtype == torch.bool:
                raise TypeError(
                    f"{self.name}: targets[{i}]['labels'] must be integer (int64), got {labels.dtype}"
                )
            if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > c):
                raise ValueError(
                    f"{self.name}: targets[{i}]['labels'] must lie in 1..num_classes={c} (0 is background), "
                    f"got values in [{int(labels.min())}, {int(labels.max())}]"
                )
            if not torch.isfinite(boxes).all():
                raise ValueError(f"{self.name}: targets[{i}]['boxes'] contains NaN or inf")
            if self.needs_masks:
                m = t["masks"]
                if tuple(m.shape) != size:
                    raise ValueError(
                        f"{self.name}: targets[{i}]['masks'] must have the image's spatial shape {size}, got {tuple(m.shape)}"
                    )
                if m.is_floating_point():
                    raise TypeError(
                        f"{self.name}: targets[{i}]['masks'] must be an integer class map (uint8), got {m.dtype}"
                    )
                if m.numel() and int(m.max()) > c:
                    raise ValueError(
                        f"{self.name}: targets[{i}]['masks'] has class {int(m.max())} > num_classes={c}"
                    )

    def pad(self, images: torch.Tensor) -> torch.Tensor:
        """Pad ``(B, C, *S)`` at the high end of each axis (replicate) to ``required_multiple``, in
        the model's memory layout (channels-last with ``cfg.channels_last``)."""
        extra = padding_to_multiple(images.shape[2:], self.required_multiple)
        if any(extra):
            pads = [v for e in reversed(extra) for v in (0, e)]
            images = F.pad(images, pads, mode="replicate")
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=channels_last_format(self.spatial_dims))
        return images

    @staticmethod
    def crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Crop the trailing spatial axes of ``x`` back to ``size`` (undoes :meth:`pad`)."""
        return x[(..., *[slice(0, s) for s in size])]

    def stack_masks(self, targets: Sequence[dict], device: torch.device) -> torch.Tensor:
        """``(B, *S)`` int64 class maps from the targets."""
        return torch.stack([t["masks"].to(device=device, dtype=torch.int64) for t in targets])
