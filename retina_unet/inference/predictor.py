"""Test-time inference: mirroring TTA x top-k epoch ensemble, merged by WBC or NMS.

``Predictor(models, ...)``: each model is a trained detector in eval mode (one per kept epoch);
each switch is independent: ``tta`` (mirroring), more than one model (epoch ensembling) and
``merge`` ("wbc", "nms" or "none" = concatenate). With one model, no TTA and merge "none" the
output is exactly ``model.predict``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from retina_unet.inference.tta import flip_boxes, flip_images, flip_seg, mirror_views
from retina_unet.inference.wbc import weighted_box_clustering_batched
from retina_unet.ops import nms

MERGES = ("wbc", "nms", "none")


class Predictor:
    """Ensemble inference over mirror views and checkpoints.

    Args:
        models: detectors meeting the model contract (``predict(images) -> list[dict]``).
        tta: use mirroring TTA (``max_views`` views from :func:`mirror_views`).
        merge: "wbc" (weighted box clustering), "nms" (per image and class) or "none".
        wbc_iou: WBC cluster threshold. nms_iou: NMS threshold for merge="nms".
        max_detections: keep at most this many merged boxes per image (highest scores).
    """

    def __init__(
        self,
        models: Sequence[torch.nn.Module],
        tta: bool = True,
        merge: str = "wbc",
        max_views: int = 4,
        mirror_axes: tuple[int, ...] | None = None,
        wbc_iou: float = 1e-5,
        nms_iou: float = 0.1,
        max_detections: int = 100,
    ):
        if not models:
            raise ValueError("Predictor needs at least one model")
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
        self.models = list(models)
        dims = {m.spatial_dims for m in self.models}
        if len(dims) != 1:
            raise ValueError(f"models disagree on spatial_dims: {dims}")
        self.spatial_dims = dims.pop()
        self.num_classes = self.models[0].num_classes
        self.views = mirror_views(self.spatial_dims, max_views, mirror_axes) if tta else [()]
        self.merge = merge
        self.wbc_iou, self.nms_iou, self.max_detections = wbc_iou, nms_iou, max_detections

    @property
    def n_members(self) -> int:
        return len(self.models) * len(self.views)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list[dict]:
        """Predict a batch ``(B, C, *S)``; returns one dict per image (boxes, scores, labels[, seg])."""
        spatial = images.shape[2:]
        per_image: list[list[tuple[int, dict]]] = [[] for _ in range(images.shape[0])]
        member = 0
        for model in self.models:
            was_training = model.training
            model.eval()
            for view in self.views:
                preds = model.predict(flip_images(images, view))
                for b, p in enumerate(preds):
                    q = dict(p)
                    q["boxes"] = flip_boxes(p["boxes"], view, spatial)
                    if "seg" in p and p["seg"] is not None:
                        q["seg"] = flip_seg(p["seg"], view)
                    per_image[b].append((member, q))
                member += 1
            model.train(was_training)
        return [self._merge(members) for members in per_image]

    def _merge(self, members: list[tuple[int, dict]]) -> dict:
        if self.merge == "none" and len(members) == 1:
            return members[0][1]
        boxes = torch.cat([p["boxes"].float() for _, p in members])
        scores = torch.cat([p["scores"].float() for _, p in members])
        labels = torch.cat([p["labels"].long() for _, p in members])
        ids = torch.cat(
            [torch.full((len(p["scores"]),), m, dtype=torch.int64, device=boxes.device) for m, p in members]
        )
        out_b, out_s, out_l = [], [], []
        if self.merge == "none":
            out_b, out_s, out_l = [boxes], [scores], [labels]
        elif self.merge == "wbc":  # all classes at once, on the device (groups = classes)
            bx, sc, cl = weighted_box_clustering_batched(boxes, scores, ids, labels, self.n_members, self.wbc_iou)
            out_b, out_s, out_l = [bx], [sc], [cl]
        else:
            for cls in labels.unique().tolist():
                sel = labels == cls
                keep = nms(boxes[sel], scores[sel], self.nms_iou)
                bx, sc = boxes[sel][keep], scores[sel][keep]
                out_b.append(bx.to(boxes.device))
                out_s.append(sc.to(boxes.device))
                out_l.append(torch.full((len(sc),), cls, dtype=torch.int64, device=boxes.device))
        width = 2 * self.spatial_dims
        b = torch.cat(out_b) if out_b else boxes.new_zeros((0, width))
        s = torch.cat(out_s) if out_s else scores.new_zeros((0,))
        lab = torch.cat(out_l) if out_l else labels.new_zeros((0,))
        order = torch.argsort(-s, stable=True)[: self.max_detections]
        result = {"boxes": b[order], "scores": s[order], "labels": lab[order]}
        segs = [p["seg"] for _, p in members if p.get("seg") is not None]
        if segs:
            result["seg"] = torch.stack([x.float() for x in segs]).mean(0)
        return result


def predictor_for_config(cfg, models: Sequence[torch.nn.Module], tta: bool | None = None) -> Predictor:
    """The test-time :class:`Predictor` of a run: ``cfg``'s ``tta`` (or the ``tta`` given here),
    ``tta_views``, ``merge``, ``wbc_iou`` and ``nms_iou`` over ``models`` (the kept epochs, or one).

    ``cfg`` is any object with those attributes (a ``TrainConfig``); the one mapping from a run's
    settings to its predictor, used by the pipeline (evaluate), ``predict`` and ``overlays``.
    """
    return Predictor(
        models,
        tta=cfg.tta if tta is None else bool(tta),
        merge=cfg.merge,
        max_views=cfg.tta_views,
        wbc_iou=cfg.wbc_iou,
        nms_iou=cfg.nms_iou,
    )
