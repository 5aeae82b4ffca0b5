"""DetU-Net: the "segmentation + heuristics" baseline.

U-FPN (P0 at full resolution) + 1x1 per-class segmentation head, trained with (soft Dice + CE) / 2.
Prediction: argmax class map -> connected components per class (``scipy.ndimage.label``, full
connectivity, on CPU) -> one box per component ([min, max + 1) per axis, the toys' box convention);
score = the maximum probability of that class inside the component; per class and image only the
``detunet_max_components`` largest components are kept, then the score floor and the
``max_detections`` cap apply.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from retina_unet.models.config import ModelConfig
from retina_unet.models.detector import Detector, backbone_for
from retina_unet.models.postprocess import empty_detections
from retina_unet.models.segmentation import SegHead
from retina_unet.nn.backbone import init_weights


def components_to_boxes(
    probs: torch.Tensor, max_components: int, score_floor: float = 0.0
) -> dict[str, torch.Tensor]:
    """``probs (C+1, *S)`` softmax map -> detections from connected components of its argmax.

    Returns boxes ``(P, 2D)`` float32, scores ``(P,)`` float32, labels ``(P,)`` int64 by decreasing score.
    """
    d = probs.dim() - 1
    argmax = probs.argmax(0).cpu().numpy()
    p = probs.detach().float().cpu().numpy()
    structure = ndimage.generate_binary_structure(d, d)
    boxes, scores, labels = [], [], []
    for c in range(1, probs.shape[0]):
        comp, n = ndimage.label(argmax == c, structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        keep = np.argsort(-sizes, kind="stable")[:max_components] + 1
        slices = ndimage.find_objects(comp)
        best = ndimage.maximum(p[c], labels=comp, index=keep)
        for lab, score in zip(keep, np.atleast_1d(best), strict=True):
            sl = slices[lab - 1]
            boxes.append([s.start for s in sl] + [s.stop for s in sl])
            scores.append(float(score))
            labels.append(c)
    if not boxes:
        return empty_detections(d, probs.device)
    b = torch.tensor(boxes, dtype=torch.float32, device=probs.device)
    s = torch.tensor(scores, dtype=torch.float32, device=probs.device)
    lab = torch.tensor(labels, dtype=torch.int64, device=probs.device)
    keep = s > score_floor
    order = torch.argsort(s[keep], descending=True, stable=True)
    return {"boxes": b[keep][order], "scores": s[keep][order], "labels": lab[keep][order]}


class DetUNet(Detector):
    """U-FPN + per-class segmentation; boxes from connected components."""

    name = "detunet"
    needs_masks = True
    has_segmentation = True

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        d = cfg.spatial_dims
        self.backbone = backbone_for(cfg, min_level=0)
        if self.cfg.seg_classes != "per_class":
            raise ValueError(
                "detunet: seg_classes must be 'per_class' (its boxes take their class from the "
                f"segmentation), got {self.cfg.seg_classes!r}"
            )
        init_weights(self.backbone, cfg.init)
        self.seg_head = SegHead(d, self.backbone.out_channels[0], cfg.num_classes, "per_class")
        self.required_multiple = self.backbone.required_multiple

    def losses(self, images: torch.Tensor, targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        self.check_images(images)
        self.check_targets(images, targets)
        seg = self.seg_head.loss(
            self.seg_head(self.backbone(images)[0]), self.stack_masks(targets, images.device)
        )
        return {**seg, "loss": self.cfg.seg_loss_weight * seg["seg"]}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list[dict]:
        self.check_images(images)
        logits = self.crop(self.seg_head(self.backbone(self.pad(images))[0]), images.shape[2:])
        probs = self.seg_head.probabilities(logits)
        out = []
        for p in probs:
            det = components_to_boxes(p, self.cfg.detunet_max_components, self.cfg.score_floor)
            det = {k: v[: self.cfg.max_detections] for k, v in det.items()}
            det["seg"] = p
            out.append(det)
        return out
