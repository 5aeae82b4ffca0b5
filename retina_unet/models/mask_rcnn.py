"""Mask R-CNN, Faster R-CNN+ (mask loss off) and U-FRCNN+ (Faster R-CNN+ on the U-FPN + P0 seg loss).

Recipe: backbone -> RPN proposals -> (training) add ground truth, match (IoU >= roi_fg_iou positive,
< roi_bg_iou negative, in between ignored), sample RoIs -> multi-level RoIAlign (``retina_unet.ops.roi_align``) -> box head (class + class-specific
deltas) [-> mask head on positives, per-class sigmoid masks at 2x the mask pool size].
Mask targets are the object's class channel of the image's class map, RoIAligned to the mask grid
and thresholded at 0.5 (instances of one class that overlap a RoI would leak in; the toys have one
object per image).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from retina_unet import ops
from retina_unet.models.coder import BoxCoder
from retina_unet.models.config import ModelConfig
from retina_unet.models.detector import Detector, backbone_for
from retina_unet.models.losses import box_regression_loss
from retina_unet.models.matcher import NEGATIVE, PADDING_IOU, Matcher
from retina_unet.models.postprocess import select_detections_batched
from retina_unet.models.roi_heads import BoxHead, MaskHead, multilevel_roi_align
from retina_unet.models.rpn import RPN
from retina_unet.models.sampling import offsets, sample_balanced
from retina_unet.models.segmentation import SegHead
from retina_unet.nn.backbone import init_weights

ROI_SAMPLING_RATIO = 2  # bilinear samples per bin and axis (torchvision's Mask R-CNN setting)


class TwoStageDetector(Detector):
    """Shared two-stage machinery; subclasses switch the mask loss and the U-FPN seg head."""

    with_mask = True
    with_seg = False

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        d, c = cfg.spatial_dims, cfg.num_classes
        self.levels = tuple(sorted(cfg.detection_levels))
        if self.levels != tuple(range(self.levels[0], self.levels[-1] + 1)):
            raise ValueError(
                f"detection_levels must be contiguous for RoI level assignment, got {cfg.detection_levels}"
            )
        self.backbone = backbone_for(cfg, min_level=0 if self.with_seg else self.levels[0])
        init_weights(self.backbone, cfg.init)
        self.rpn = RPN(cfg, cfg.fpn_channels, self.backbone.strides)
        self.box_head = BoxHead(
            d, cfg.fpn_channels, cfg.box_pool_size, cfg.fc_channels, c, cfg.box_head, cfg.head_channels
        )
        self.mask_head = (
            MaskHead(d, cfg.fpn_channels, cfg.head_channels, c, cfg.norm) if self.with_mask else None
        )
        self.seg_head = (
            SegHead(d, self.backbone.out_channels[0], c, self.cfg.seg_classes) if self.with_seg else None
        )
        self.roi_matcher = Matcher(cfg.roi_fg_iou, cfg.roi_bg_iou, low_quality=False)
        self.coder = BoxCoder(cfg.box_center_weight, cfg.box_size_weight, cfg.box_log_clamp)
        self.required_multiple = self.backbone.required_multiple

    def _pool(self, feats, boxes: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        cfg = self.cfg
        return multilevel_roi_align(
            feats,
            boxes,
            self.backbone.strides,
            self.levels,
            size,
            cfg.roi_canonical_size,
            cfg.roi_canonical_level,
            ROI_SAMPLING_RATIO,
        )

    def _sample_rois(self, proposals: list[torch.Tensor], targets: Sequence[dict], device) -> tuple:
        """Per image: RoIs (proposals + ground truth), their class targets, matched gt index (-1 = bg).

        :meth:`_sample_rois_reference` for the whole batch at once (same RoIs in the same order,
        same random draws): one IoU call (every image's objects against every candidate, other
        images' pairs masked out), one matching pass, then the two ``randperm`` draws of
        :func:`sample_balanced` image by image."""
        cfg = self.cfg
        b = len(targets)
        gt = [t["boxes"].to(device=device, dtype=torch.float32) for t in targets]
        gl = [t["labels"].to(device=device, dtype=torch.int64) for t in targets]
        sizes = [p.shape[0] + g.shape[0] for p, g in zip(proposals, gt, strict=True)]
        gt_counts = [g.shape[0] for g in gt]
        cand = torch.cat([x for p, g in zip(proposals, gt, strict=True) for x in (p, g)])  # image order
        ids = torch.arange(b, device=device)
        cand_image = torch.repeat_interleave(ids, torch.tensor(sizes, device=device), output_size=cand.shape[0])
        gt_start = torch.tensor(offsets(gt_counts), device=device)
        if sum(gt_counts):
            gt_image = torch.repeat_interleave(ids, torch.tensor(gt_counts, device=device), output_size=sum(gt_counts))
            iou = ops.box_iou(torch.cat(gt), cand).masked_fill(gt_image[:, None] != cand_image, PADDING_IOU)
            m = self.roi_matcher.match_padded(iou[None])[0]  # index into the concatenated objects
        else:
            m = torch.full((cand.shape[0],), NEGATIVE, dtype=torch.int64, device=device)
        pos, neg = m >= 0, m == NEGATIVE
        npos, nneg = torch.stack(
            [torch.bincount(cand_image[pos], minlength=b), torch.bincount(cand_image[neg], minlength=b)]
        ).tolist()
        source = torch.cat([torch.nonzero(pos).squeeze(1), torch.nonzero(neg).squeeze(1)])
        pos_start, neg_start = offsets(npos), [sum(npos) + s for s in offsets(nneg)]
        picks, counts = [], []
        for i in range(b):  # the draws of sample_balanced, image by image
            n_pos = min(npos[i], int(cfg.roi_batch_size * cfg.roi_positive_fraction))
            n_neg = min(nneg[i], cfg.roi_batch_size - n_pos)
            picks.append(torch.randperm(npos[i], device=device)[:n_pos] + pos_start[i])
            picks.append(torch.randperm(nneg[i], device=device)[:n_neg] + neg_start[i])
            counts.append(n_pos + n_neg)
        pick = torch.cat(picks)
        sel = source[pick]  # candidates, per image positives then negatives, in the drawn order
        is_pos = pick < sum(npos)
        m_sel = m[sel]
        matched = torch.where(is_pos, m_sel - gt_start[cand_image[sel]], -1)
        gl_flat = torch.cat([*gl, torch.zeros(1, dtype=torch.int64, device=device)])
        labels = torch.where(is_pos, gl_flat[m_sel.clamp(min=0)], 0)
        return list(cand[sel].split(counts)), list(labels.split(counts)), list(matched.split(counts))

    def _sample_rois_reference(self, proposals: list[torch.Tensor], targets: Sequence[dict], device) -> tuple:
        """:meth:`_sample_rois` one image at a time (the implementation until issue #14): the
        reference for tests/test_losses_batched.py and benchmarks/study/loss_step.py."""
        cfg = self.cfg
        rois, labels, matched = [], [], []
        for p, t in zip(proposals, targets, strict=True):
            gt = t["boxes"].to(device=device, dtype=torch.float32)
            gl = t["labels"].to(device=device, dtype=torch.int64)
            cand = torch.cat([p, gt], 0)
            if gt.shape[0]:
                m = self.roi_matcher(ops.box_iou(gt, cand))
            else:
                m = torch.full((cand.shape[0],), -1, dtype=torch.int64, device=device)
            pos, neg = sample_balanced(m, cfg.roi_batch_size, cfg.roi_positive_fraction)
            sel = torch.cat([pos, neg])
            rois.append(cand[sel])
            mi = torch.cat([m[pos], torch.full_like(neg, -1)])
            matched.append(mi)
            labels.append(
                torch.where(
                    mi >= 0, gl[mi.clamp(min=0)] if gl.numel() else torch.zeros_like(mi), torch.zeros_like(mi)
                )
            )
        return rois, labels, matched

    def losses(self, images: torch.Tensor, targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        # 1. check  2. backbone  3. RPN (+ losses)  4. sample RoIs  5. box head losses  6. mask / seg losses
        self.check_images(images)
        self.check_targets(images, targets)
        cfg, size = self.cfg, tuple(images.shape[2:])
        feats = self.backbone(self.pad(images))
        proposals, result = self.rpn(feats, size, targets)
        rois, labels, matched = self._sample_rois(proposals, targets, images.device)
        logits, deltas = self.box_head(self._pool(feats, rois, cfg.box_pool_size))
        all_rois, all_labels = torch.cat(rois), torch.cat(labels)
        gt_boxes = self._matched_boxes(targets, matched, images.device)
        result["class"] = F.cross_entropy(logits.float(), all_labels)
        pos = torch.nonzero(all_labels > 0).squeeze(1)
        box_t = self.coder.encode(gt_boxes[pos], all_rois[pos])
        result["box"] = box_regression_loss(deltas[pos, all_labels[pos]].float(), box_t, cfg.smooth_l1_beta)
        total = result["rpn_class"] + result["rpn_box"] + cfg.roi_class_loss_weight * result["class"] + result["box"]
        if self.with_mask:
            result["mask"] = self._mask_loss(feats, rois, labels, targets, images.device)
            total = total + result["mask"]
        if self.with_seg:
            seg_logits = self.crop(self.seg_head(feats[0]), size)
            seg = self.seg_head.loss(seg_logits, self.stack_masks(targets, images.device))
            result.update(seg)
            total = total + cfg.seg_loss_weight * seg["seg"]
        result["loss"] = total
        return result

    def _matched_boxes(self, targets: Sequence[dict], matched: Sequence[torch.Tensor], device) -> torch.Tensor:
        """Boxes of the matched objects of every image's RoIs, concatenated: ``(R, 2D)`` (rows of
        background RoIs hold some object's box or zeros: read only the positives')."""
        gt = [t["boxes"].to(device, torch.float32) for t in targets]
        flat = torch.cat([*gt, gt[0].new_zeros((1, 2 * self.spatial_dims))])
        m = torch.cat(list(matched))
        counts = torch.tensor([x.shape[0] for x in matched], device=device)
        image = torch.repeat_interleave(torch.arange(len(gt), device=device), counts, output_size=m.shape[0])
        start = torch.tensor(offsets([g.shape[0] for g in gt]), device=device)
        return flat[start[image] + m.clamp(min=0)]

    def _mask_loss(self, feats, rois, labels, targets, device) -> torch.Tensor:
        """Per-class sigmoid BCE of the mask head on the first ``cfg.mask_rois_per_image`` sampled
        positives of each image (None: all of them), against the object's class channel of the
        image's class map RoIAligned to the mask grid and thresholded at 0.5.

        :meth:`_mask_loss_reference` for the whole batch at once (same RoIs, targets and loss):
        the positives picked by their rank within their image, the targets of all images from
        one RoIAlign call on the batch's one-hot class maps."""
        cfg, c, b = self.cfg, self.num_classes, len(rois)
        all_rois, all_labels = torch.cat(list(rois)), torch.cat(list(labels))
        counts = torch.tensor([r.shape[0] for r in rois], device=device)
        image = torch.repeat_interleave(torch.arange(b, device=device), counts, output_size=all_rois.shape[0])
        pos = all_labels > 0
        if cfg.mask_rois_per_image is not None:  # rank of each positive among its image's positives
            before = torch.cumsum(pos, 0) - pos.long()  # positives before this RoI in the batch
            per_image = torch.bincount(image[pos], minlength=b)
            rank = before - (torch.cumsum(per_image, 0) - per_image)[image]
            pos = pos & (rank < cfg.mask_rois_per_image)
        idx = torch.nonzero(pos).squeeze(1)
        if idx.numel() == 0:
            return sum(p.sum() * 0.0 for p in self.mask_head.parameters())
        pos_rois, pos_labels, pos_image = all_rois[idx], all_labels[idx], image[idx]
        per_image = torch.bincount(pos_image, minlength=b).tolist()
        logits = self.mask_head(self._pool(feats, list(pos_rois.split(per_image)), cfg.mask_pool_size))
        mask_size = tuple(logits.shape[2:])  # (P, C, *M)
        onehot = F.one_hot(self.stack_masks(targets, device), c + 1).movedim(-1, 1)[:, 1:].float()  # (B, C, *S)
        boxes = torch.cat([pos_image[:, None].to(pos_rois.dtype), pos_rois], 1).float()
        target = ops.roi_align(onehot, boxes, mask_size, 1.0, ROI_SAMPLING_RATIO, True)  # (P, C, *M)
        sel = torch.arange(pos_labels.numel(), device=device)
        tgt = (target[sel, pos_labels - 1] >= 0.5).float()
        return F.binary_cross_entropy_with_logits(logits[sel, pos_labels - 1].float(), tgt)

    def _mask_loss_reference(self, feats, rois, labels, targets, device) -> torch.Tensor:
        """:meth:`_mask_loss` one image at a time (the implementation until issue #14)."""
        cfg, c = self.cfg, self.num_classes
        # the first cfg.mask_rois_per_image sampled positives of each image (None: all of them)
        cap = cfg.mask_rois_per_image
        pos_rois = [r[lab > 0][:cap] for r, lab in zip(rois, labels, strict=True)]
        pos_labels = torch.cat([lab[lab > 0][:cap] for lab in labels])
        if pos_labels.numel() == 0:
            return sum(p.sum() * 0.0 for p in self.mask_head.parameters())
        logits = self.mask_head(self._pool(feats, pos_rois, cfg.mask_pool_size))  # (P, C, *M)
        mask_size = tuple(logits.shape[2:])
        masks_t = []
        for r, t in zip(pos_rois, targets, strict=True):
            if r.shape[0] == 0:
                continue
            onehot = (
                F.one_hot(t["masks"].to(device, torch.int64), c + 1).movedim(-1, 0)[1:][None].float()
            )  # (1, C, *S)
            idx = torch.zeros((r.shape[0], 1), dtype=r.dtype, device=device)
            masks_t.append(
                ops.roi_align(
                    onehot, torch.cat([idx, r], 1).float(), mask_size, 1.0, ROI_SAMPLING_RATIO, True
                )
            )
        target = torch.cat(masks_t)  # (P, C, *M)
        sel = torch.arange(pos_labels.numel(), device=device)
        tgt = (target[sel, pos_labels - 1] >= 0.5).float()
        return F.binary_cross_entropy_with_logits(logits[sel, pos_labels - 1].float(), tgt)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list[dict]:
        self.check_images(images)
        cfg, c, size = self.cfg, self.num_classes, tuple(images.shape[2:])
        feats = self.backbone(self.pad(images))
        proposals, _ = self.rpn(feats, size)
        logits, deltas = self.box_head(self._pool(feats, proposals, cfg.box_pool_size))
        probs = F.softmax(logits.float(), dim=1)
        seg = self.seg_head.probabilities(self.crop(self.seg_head(feats[0]), size)) if self.with_seg else None
        # All images at once (models.postprocess.select_detections_batched): one host sync.
        counts = [p.shape[0] for p in proposals]
        props = torch.cat(proposals) if proposals else probs.new_zeros((0, 2 * self.spatial_dims))
        r = props.shape[0]
        boxes = self.coder.decode(deltas[:r, 1:].float(), props[:, None, :])  # (R, C, 2D)
        lab = torch.arange(1, c + 1, device=images.device).expand(r, c)
        image_ids = torch.repeat_interleave(
            torch.arange(len(counts), device=images.device), torch.tensor(counts, device=images.device), output_size=r
        )
        results = select_detections_batched(
            boxes.reshape(r * c, -1),
            probs[:r, 1:].reshape(-1),
            lab.reshape(-1),
            image_ids[:, None].expand(r, c).reshape(-1),
            images.shape[0],
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


class MaskRCNN(TwoStageDetector):
    name = "mask_rcnn"
    needs_masks = True


class FasterRCNNPlus(TwoStageDetector):
    """Mask R-CNN with the mask head and loss off (the paper's Faster R-CNN+)."""

    name = "faster_rcnn_plus"
    with_mask = False


class UFRCNNPlus(TwoStageDetector):
    """Faster R-CNN+ on the U-FPN with the P0 segmentation loss (Dice + CE) / 2."""

    name = "ufrcnn_plus"
    with_mask = False
    with_seg = True
    needs_masks = True
    has_segmentation = True
