"""A preview image of a dataset folder: examples per class with mask outlines and boxes.

2D: one panel per example. 3D: two panels per example, the slice along axis 0 through the object's
centre and the maximum projection along axis 0 (mask outline and box drawn in axes 1 and 2).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .palette import GT_STYLE, MASK_COLOUR, class_colour, legend
from .storage import load_dataset


def _panels(image: np.ndarray, mask: np.ndarray, box: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(title, 2D image, 2D mask) panels and, for 3D, projections of the box into axes (1, 2)."""
    if image.ndim == 2:
        return [("", image, mask)]
    z = int((box[0] + box[3]) // 2)  # box centre along axis 0 = the object's centre slice
    return [(f"slice {z}", image[z], mask[z]), ("max proj.", image.max(axis=0), mask.max(axis=0))]


def preview_path(out: str | os.PathLike, spec, split: str) -> Path:
    """The PNG actually written for ``--out``: an existing folder gets ``<task>_<dim>d_<split>.png``
    inside it, a name without a suffix gets ``.png`` appended (what matplotlib would do silently)."""
    out = Path(out)
    if out.is_dir():
        return out / f"{spec.task}_{spec.dim}d_{split}.png"
    return out if out.suffix else out.with_name(out.name + ".png")


def write_preview(
    dataset_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "train",
    per_class: int = 4,
    verify: bool = False,
) -> Path:
    """Draw ``per_class`` examples of each class of ``split`` into the PNG ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    ds = load_dataset(dataset_dir, verify=verify)
    arrays = ds.split(split)
    spec = ds.spec
    first_labels = np.asarray(arrays.labels[:, 0])
    rows = []
    for cls in (1, 2):
        idx = np.flatnonzero(first_labels == cls)[:per_class]
        rows.append((cls, idx))
    n_panels = 1 if spec.dim == 2 else 2
    ncols = max(1, per_class * n_panels)
    fig, axes = plt.subplots(2, ncols, figsize=(2.2 * ncols, 2.7 * 2), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, (cls, idx) in enumerate(rows):
        for c, i in enumerate(idx):
            image, mask = np.asarray(arrays.images[i]), np.asarray(arrays.masks[i])
            boxes, labels = np.asarray(arrays.boxes[i]), np.asarray(arrays.labels[i])
            for p, (title, img2, msk2) in enumerate(_panels(image, mask, boxes[0])):
                ax = axes[r, c * n_panels + p]
                ax.imshow(img2, cmap="gray", interpolation="nearest")
                if (msk2 > 0).any():
                    ax.contour(msk2 > 0, levels=[0.5], colors=MASK_COLOUR, linewidths=0.8)
                for box, lab in zip(boxes, labels, strict=True):
                    lo, hi = box[: spec.dim][-2:], box[spec.dim :][-2:]  # in-plane axes (last two)
                    # pixel k covers [k - 0.5, k + 0.5] in imshow coordinates; box [lo, hi) covers [lo, hi)
                    ax.add_patch(
                        Rectangle(
                            (lo[1] - 0.5, lo[0] - 0.5),
                            hi[1] - lo[1],
                            hi[0] - lo[0],
                            fill=False,
                            edgecolor=class_colour(lab),
                            linestyle=GT_STYLE,
                            linewidth=0.8,
                        )
                    )
                ax.set_title(f"#{i} class {cls} {title}".strip(), fontsize=7)
    fig.suptitle(
        f"{spec.task} {spec.dim}D {'x'.join(map(str, spec.shape))}, {split} split\n"
        f"(rows: class 1, class 2; {legend(predictions=False)})",
        fontsize=8,
    )
    fig.tight_layout()
    out = preview_path(out, spec, split)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, format="png")
    plt.close(fig)
    return out
