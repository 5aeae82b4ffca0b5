"""Retina Net and Retina U-Net on the one-stage detector seam.

``OneStageDetector`` holds everything that is not the network: anchors, matching, box coding,
losses and post-processing. ``RetinaNetwork`` is the network: ResNet-FPN + class/box subnets on the
detection levels (+ a 1x1 segmentation head on P0 for Retina U-Net).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from retina_unet import ops
from retina_unet.models.anchors import AnchorGenerator, flatten_head_output
from retina_unet.models.coder import BoxCoder
from retina_unet.models.config import ModelConfig
from retina_unet.models.detector import Detector, backbone_for
from retina_unet.models.losses import (
    box_regression_loss,
    box_regression_loss_batched,
    cap_positives,
    flat_rows,
    focal_class_loss,
    focal_class_loss_batched,
    foreground_probability,
    shem_class_loss,
    shem_class_loss_batched,
)
from retina_unet.models.matcher import IGNORE, NEGATIVE, Matcher, gather_matched, match_batch
from retina_unet.models.postprocess import select_detections_batched, top_candidates
from retina_unet.models.sampling import sample_anchors_batched
from retina_unet.models.segmentation import SegHead
from retina_unet.nn.backbone import init_weights
from retina_unet.nn.layers import ConvNormAct, conv_layer


class Subnet(nn.Sequential):
    """``n`` x (3x3 conv + ReLU) then a 3x3 conv to ``out`` channels; shared over levels."""

    def __init__(self, spatial_dims: int, cin: int, width: int, n: int, out: int, norm: str | None) -> None:
        layers = [ConvNormAct(spatial_dims, cin if i == 0 else width, width, 3, norm=norm) for i in range(n)]
        layers.append(conv_layer(spatial_dims)(width if n else cin, out, 3, padding=1))
        super().__init__(*layers)


class RetinaNetwork(nn.Module):
    """ResNet-FPN + Retina subnets. ``forward(x)`` -> dict with

    - "cls": ``(B, A, C+1)`` class logits, "box": ``(B, A, 2*D)`` deltas (A = all anchors, level order),
    - "shapes": feature shapes of the detection levels, "seg": ``(B, K, *S)`` logits if ``with_seg``
      (K = 2 binary, C+1 per class).
    """

    def __init__(self, cfg: ModelConfig, num_anchors: int, with_seg: bool) -> None:
        super().__init__()
        d, c = cfg.spatial_dims, cfg.num_classes
        self.levels = tuple(cfg.detection_levels)
        self.num_outputs = c + 1
        self.backbone = backbone_for(cfg, min_level=0 if with_seg else min(self.levels))
        cin = cfg.fpn_channels
        self.cls_subnet = Subnet(d, cin, cfg.head_channels, cfg.head_convs, num_anchors * (c + 1), cfg.norm)
        self.box_subnet = Subnet(d, cin, cfg.head_channels, cfg.head_convs, num_anchors * 2 * d, cfg.norm)
        self.seg_head = SegHead(d, self.backbone.out_channels[0], c, cfg.seg_classes) if with_seg else None
        init_weights(self, cfg.init)
        nn.init.normal_(self.box_subnet[-1].weight, std=0.01)
        nn.init.normal_(self.cls_subnet[-1].weight, std=0.01)
        if self.seg_head is not None:
            self.seg_head.reset_parameters()
        if cfg.class_loss == "focal":  # background prior ~0.99 so the focal loss starts stable
            bias = self.cls_subnet[-1].bias.data.view(num_anchors, c + 1)
            bias[:, 0] = math.log(99.0 * c)

    def forward(self, x: torch.Tensor) -> dict:
        feats = self.backbone(x)
        d = x.dim() - 2
        cls = [flatten_head_output(self.cls_subnet(feats[k]), self.num_outputs) for k in self.levels]
        box = [flatten_head_output(self.box_subnet(feats[k]), 2 * d) for k in self.levels]
        out = {
            "cls": torch.cat(cls, 1),
            "box": torch.cat(box, 1),
            "shapes": [feats[k].shape[2:] for k in self.levels],
        }
        if self.seg_head is not None:
            out["seg"] = self.seg_head(feats[0])
        return out


class OneStageDetector(Detector):
    """Anchors + matching + coding + losses + post-processing around a ``RetinaNetwork``."""

    with_seg = False

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.anchor_generator = AnchorGenerator(
            cfg.spatial_dims, cfg.anchor_sizes, cfg.anchor_scales_per_octave, cfg.anchor_ratios
        )
        self.network = RetinaNetwork(self.cfg, self.anchor_generator.num_anchors, self.with_seg)
        self.matcher = Matcher(cfg.match_fg_iou, cfg.match_bg_iou, cfg.match_low_quality)
        self.coder = BoxCoder(cfg.box_center_weight, cfg.box_size_weight, cfg.box_log_clamp)
        self.required_multiple = self.network.backbone.required_multiple

    def anchors(self, shapes: Sequence, device: torch.device) -> torch.Tensor:
        strides = [self.network.backbone.strides[k] for k in self.cfg.detection_levels]
        return torch.cat(self.anchor_generator(shapes, strides, device), 0)

    def losses(self, images: torch.Tensor, targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        # 1. check inputs  2. network  3. anchors  4. match, cap and mine for the whole batch
        # 5. class/box losses per image (sums over each image's selected anchors), mean over
        # images  6. seg loss
        # Same losses and random draws as the per-image loop of _losses_reference, without the
        # loop: tests/test_losses_batched.py compares the two; docs/speed.md has the timings.
        self.check_images(images)
        self.check_targets(images, targets)
        out = self.network(self.pad(images))
        anchors = self.anchors(out["shapes"], images.device)
        cfg = self.cfg
        gt_boxes = [t["boxes"].to(device=images.device, dtype=torch.float32) for t in targets]
        gt_labels = [t["labels"].to(device=images.device, dtype=torch.int64) for t in targets]
        matches = match_batch(self.matcher, gt_boxes, anchors)  # (B, A)
        labels = gather_matched(gt_labels, matches)
        logits = out["cls"].float()
        if cfg.class_loss == "focal":
            cls_loss = focal_class_loss_batched(logits, matches, labels, cfg.focal_alpha, cfg.focal_gamma)
        else:
            hardness = foreground_probability(logits) if cfg.shem_poolsize is not None else None
            kept, negatives = sample_anchors_batched(
                matches >= 0,
                matches == NEGATIVE,
                cfg.max_positives,
                lambda n_pos: max(1, round(cfg.neg_pos_ratio * n_pos)),
                hardness,
                cfg.shem_poolsize,
            )
            matches = matches.masked_fill((matches >= 0) & ~kept, IGNORE)
            cls_loss = shem_class_loss_batched(logits, matches, labels, negatives)
        rows, image = flat_rows(matches >= 0)
        target = self.coder.encode(gather_matched(gt_boxes, matches, rows), anchors[rows % anchors.shape[0]])
        pred = out["box"].flatten(0, 1)[rows].float()
        box_loss = box_regression_loss_batched(pred, target, image, len(targets), cfg.smooth_l1_beta)
        result = {"class": cls_loss.mean(), "box": box_loss.mean()}
        return self._add_seg_loss(result, out, images, targets)

    def _add_seg_loss(self, result: dict, out: dict, images: torch.Tensor, targets: Sequence[dict]) -> dict:
        total = result["class"] + result["box"]
        if self.with_seg:
            seg_logits = self.crop(out["seg"], images.shape[2:])
            seg = self.network.seg_head.loss(seg_logits, self.stack_masks(targets, images.device))
            result.update(seg)
            total = total + self.cfg.seg_loss_weight * seg["seg"]
        result["loss"] = total
        return result

    def _losses_reference(self, images: torch.Tensor, targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        """:meth:`losses` one image at a time (the implementation until issue #14): the slow
        reference the batched code is tested against (tests/test_losses_batched.py) and timed
        against (benchmarks/study/loss_step.py)."""
        self.check_images(images)
        self.check_targets(images, targets)
        out = self.network(self.pad(images))
        anchors = self.anchors(out["shapes"], images.device)
        cfg = self.cfg
        cls_losses, box_losses = [], []
        for i, t in enumerate(targets):
            gt_boxes = t["boxes"].to(device=images.device, dtype=torch.float32)
            gt_labels = t["labels"].to(device=images.device, dtype=torch.int64)
            if gt_boxes.shape[0]:
                matches = self.matcher(ops.box_iou(gt_boxes, anchors))
            else:
                matches = self.matcher(anchors.new_zeros((0, anchors.shape[0])))
            logits = out["cls"][i].float()
            if cfg.class_loss == "focal":
                cls_losses.append(
                    focal_class_loss(logits, matches, gt_labels, cfg.focal_alpha, cfg.focal_gamma)
                )
            else:
                matches = cap_positives(matches, cfg.max_positives)
                cls_losses.append(
                    shem_class_loss(logits, matches, gt_labels, cfg.neg_pos_ratio, cfg.shem_poolsize)
                )
            pos = matches >= 0
            target = self.coder.encode(gt_boxes[matches[pos]], anchors[pos])
            box_losses.append(box_regression_loss(out["box"][i][pos].float(), target, cfg.smooth_l1_beta))
        result = {"class": torch.stack(cls_losses).mean(), "box": torch.stack(box_losses).mean()}
        return self._add_seg_loss(result, out, images, targets)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list[dict]:
        self.check_images(images)
        out = self.network(self.pad(images))
        anchors = self.anchors(out["shapes"], images.device)
        cfg, c, size = self.cfg, self.num_classes, tuple(images.shape[2:])
        probs = F.softmax(out["cls"].float(), dim=-1)[..., 1:]  # (B, A, C)
        seg = self.network.seg_head.probabilities(self.crop(out["seg"], size)) if self.with_seg else None
        # The whole batch at once on the device (models.postprocess): per-image top-k candidates,
        # decode, then floor/clip/class-wise NMS/cap for all images; one host sync in to_list().
        bsz = images.shape[0]
        top_s, top_i, _ = top_candidates(probs.reshape(bsz, -1), cfg.score_floor, cfg.pre_nms_top_k)
        a = top_i // c
        deltas = out["box"].gather(1, a[..., None].expand(-1, -1, out["box"].shape[-1]))
        boxes = self.coder.decode(deltas.float(), anchors[a])
        image_ids = torch.arange(bsz, device=images.device).repeat_interleave(top_s.shape[1])
        results = select_detections_batched(
            boxes.reshape(-1, boxes.shape[-1]),
            top_s.reshape(-1),
            (top_i % c + 1).reshape(-1),
            image_ids,
            bsz,
            size,
            cfg.score_floor,
            cfg.pre_nms_top_k,
            cfg.nms_iou,
            cfg.max_detections,
            cfg.min_box_size,
        ).to_list()
        if seg is not None:
            for i, det in enumerate(results):
                det["seg"] = seg[i]
        return results


class RetinaNet(OneStageDetector):
    """Retina Net (the paper's ablation): Retina U-Net without the segmentation head and loss."""

    name = "retina_net"


class RetinaUNet(OneStageDetector):
    """Retina U-Net: Retina Net on the U-FPN (P0..P5) + 1x1 seg head on P0, loss += (Dice + CE) / 2.
    Segmentation is binary (foreground vs background) unless ``cfg.seg_classes="per_class"``."""

    name = "retina_unet"
    with_seg = True
    needs_masks = True
    has_segmentation = True
    default_seg_classes = "binary"
