"""The one predict loop: whole images in batches through ``predict_fn``, results moved to the CPU.

Used by validation in the training engine, by test-time evaluation (``retina_unet.pipeline``), by
``predict`` and by ``overlays``. Images come from any indexable sequence of ``(C, *S)`` arrays
(read lazily, e.g. :class:`retina_unet.data.SplitImages` or the files of a ``predict`` folder).
Consecutive images of equal shape are batched together, at most ``batch_size`` per batch, so a toy
split (all one shape) is cut into the same consecutive chunks wherever it is predicted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm


def shape_batches(shapes: Sequence[tuple[int, ...]], batch_size: int) -> list[list[int]]:
    """Consecutive runs of equal shape, cut into batches of at most ``batch_size`` indices."""
    out: list[list[int]] = []
    for i, shape in enumerate(shapes):
        if out and len(out[-1]) < batch_size and shapes[out[-1][0]] == shape:
            out[-1].append(i)
        else:
            out.append([i])
    return out


@torch.no_grad()
def predict_images(
    predict_fn: Callable[[torch.Tensor], list[dict]],
    images: Sequence[np.ndarray],
    batch_size: int,
    device: torch.device | str,
    progress: bool = False,
    desc: str = "predict",
    keep_seg: bool = False,
    on_batch: Callable[[list[int], list[dict]], None] | None = None,
) -> list[dict]:
    """Predict every image of ``images`` (``(C, *S)`` each) with ``predict_fn(images (B, C, *S))``.

    Returns one dict per image on the CPU: boxes ``(P, 2*D)``, scores ``(P,)``, labels ``(P,)``
    (and "seg" ``(C+1, *S)`` only with ``keep_seg``), floating tensors as float32 (a model under
    bfloat16 autocast may emit bfloat16, which NumPy and the evaluation cannot read). ``on_batch(indices, preds)`` is called after
    each batch with that batch's predictions including "seg" (to draw overlays without keeping
    every segmentation in memory).
    """
    shapes = [tuple(images[i].shape) for i in range(len(images))]
    out: list[dict] = [{} for _ in shapes]
    groups = shape_batches(shapes, batch_size)
    for ids in tqdm(groups, total=len(groups), desc=desc, disable=not progress, leave=False):
        batch = torch.from_numpy(np.stack([np.asarray(images[i], dtype=np.float32) for i in ids])).to(device)
        preds = [{k: _to_host(v) for k, v in p.items()} for p in predict_fn(batch)]
        if on_batch is not None:
            on_batch(ids, preds)
        for i, p in zip(ids, preds, strict=True):
            out[i] = p if keep_seg else {k: v for k, v in p.items() if k != "seg"}
    return out


def _to_host(v):
    """A prediction value on the CPU, floating tensors as float32."""
    if not torch.is_tensor(v):
        return v
    v = v.detach().cpu()
    return v.float() if v.is_floating_point() and v.dtype != torch.float64 else v
