"""Region proposal network on the FPN levels (2D / 3D): objectness + box deltas per anchor.

Objectness is a sigmoid logit (MDT: a 2-class softmax, the same function of one logit difference)
trained with binary CE on a few random positives and SHEM-mined negatives per image (MDT's toys: 1 + 1). Proposals: per level the
``rpn_pre_nms_top_k`` best anchors, decoded and clipped, then NMS through ``retina_unet.ops``
(per level, as groups) and the ``rpn_post_nms_top_k_*`` best overall.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from retina_unet import ops
from retina_unet.models.anchors import AnchorGenerator, flatten_head_output
from retina_unet.models.coder import BoxCoder, clip_boxes
from retina_unet.models.config import ModelConfig
from retina_unet.models.losses import (
    box_regression_loss,
    box_regression_loss_batched,
    flat_rows,
    foreground_probability,
    per_image_sum,
    shem_negatives,
)
from retina_unet.models.matcher import NEGATIVE, Matcher, gather_matched, match_batch
from retina_unet.models.sampling import sample_anchors_batched
from retina_unet.nn.layers import ConvNormAct, conv_layer


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 convs to A objectness logits and A * 2D deltas (shared over levels)."""

    def __init__(self, spatial_dims: int, cin: int, width: int, num_anchors: int, norm: str | None) -> None:
        super().__init__()
        conv = conv_layer(spatial_dims)
        self.conv = ConvNormAct(spatial_dims, cin, width, 3, norm=norm)
        self.objectness = conv(width, num_anchors, 1)
        self.deltas = conv(width, num_anchors * 2 * spatial_dims, 1)
        for m in (self.objectness, self.deltas):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(x)
        return self.objectness(h), self.deltas(h)


class RPN(nn.Module):
    """``rpn(feats, image_size, targets)`` -> (proposals per image ``[Tensor[R_i, 2*D]]``, losses)."""

    def __init__(self, cfg: ModelConfig, fpn_channels: int, strides: dict[int, Sequence[int]]) -> None:
        super().__init__()
        self.cfg = cfg
        self.levels = tuple(cfg.detection_levels)
        self.strides = [tuple(strides[k]) for k in self.levels]
        self.anchor_generator = AnchorGenerator(
            cfg.spatial_dims, cfg.anchor_sizes, cfg.rpn_anchor_scales_per_octave, cfg.anchor_ratios
        )
        self.head = RPNHead(
            cfg.spatial_dims, fpn_channels, cfg.head_channels, self.anchor_generator.num_anchors, cfg.norm
        )
        self.matcher = Matcher(cfg.rpn_fg_iou, cfg.rpn_bg_iou, low_quality=True)
        self.coder = BoxCoder(cfg.box_center_weight, cfg.box_size_weight, cfg.box_log_clamp)

    def forward(
        self,
        feats: dict[int, torch.Tensor],
        image_size: tuple[int, ...],
        targets: Sequence[dict] | None = None,
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        d = self.cfg.spatial_dims
        obj, deltas, counts = [], [], []
        for k in self.levels:
            o, dl = self.head(feats[k])
            obj.append(flatten_head_output(o, 1).squeeze(-1))  # (B, A_l)
            deltas.append(flatten_head_output(dl, 2 * d))  # (B, A_l, 2D)
            counts.append(obj[-1].shape[1])
        shapes = [feats[k].shape[2:] for k in self.levels]
        anchors = torch.cat(self.anchor_generator(shapes, self.strides, obj[0].device), 0)
        obj_all, deltas_all = torch.cat(obj, 1), torch.cat(deltas, 1)
        proposals = self._proposals(obj_all.detach(), deltas_all.detach(), anchors, counts, image_size)
        losses = self._losses(obj_all, deltas_all, anchors, targets) if targets is not None else {}
        return proposals, losses

    def _proposals(self, obj, deltas, anchors, counts, image_size) -> list[torch.Tensor]:
        """Per image: the ``rpn_pre_nms_top_k`` best anchors of each level, decoded and clipped, boxes
        under ``min_box_size`` dropped, NMS per level, the ``post`` best kept boxes by score.

        :meth:`_proposals_reference` for the whole batch at once, with the same result (boxes
        and order): ``topk`` per level over all images, one ``batched_nms`` with a group per
        (image, level) and no cap, then each image's first ``post`` kept boxes. The candidates are
        laid out image by image in the per-image order, and ``batched_nms`` orders by score with
        ties by index, so each image's kept boxes come in the per-image call's order, and greedy
        NMS capped at ``post`` keeps the first ``post`` of the uncapped result."""
        cfg, d = self.cfg, self.cfg.spatial_dims
        post = cfg.rpn_post_nms_top_k_train if self.training else cfg.rpn_post_nms_top_k_test
        b = obj.shape[0]
        idx, lvl = [], []
        start = 0
        for li, n in enumerate(counts):
            k = min(n, cfg.rpn_pre_nms_top_k)
            idx.append(torch.topk(obj[:, start : start + n], k, dim=1).indices + start)
            lvl.append(torch.full((k,), li, dtype=torch.int64, device=obj.device))
            start += n
        idx, lvl = torch.cat(idx, 1), torch.cat(lvl)  # (B, K), (K,)
        boxes = self.coder.decode(deltas.gather(1, idx[..., None].expand(-1, -1, 2 * d)).float(), anchors[idx])
        boxes = clip_boxes(boxes.flatten(0, 1), image_size)
        scores = obj.gather(1, idx).float().flatten()
        image = torch.arange(b, device=obj.device).repeat_interleave(idx.shape[1])
        ok = ((boxes[:, d:] - boxes[:, :d]) >= cfg.min_box_size).all(dim=1)
        boxes, scores, image, groups = boxes[ok], scores[ok], image[ok], (image * len(counts) + lvl.repeat(b))[ok]
        keep = ops.batched_nms(boxes, scores, groups, cfg.rpn_nms_iou)  # by score, ties by index
        keep = keep[torch.sort(image[keep], stable=True).indices]  # image by image, order kept
        per_image = torch.bincount(image[keep], minlength=b)
        first = torch.cumsum(per_image, 0) - per_image
        rank = torch.arange(keep.shape[0], device=obj.device) - first[image[keep]]
        keep = keep[rank < post]
        return list(boxes[keep].split(per_image.clamp(max=post).tolist()))

    def _proposals_reference(self, obj, deltas, anchors, counts, image_size) -> list[torch.Tensor]:
        """:meth:`_proposals` one image at a time (the implementation until issue #14)."""
        cfg, d = self.cfg, self.cfg.spatial_dims
        post = cfg.rpn_post_nms_top_k_train if self.training else cfg.rpn_post_nms_top_k_test
        out = []
        for i in range(obj.shape[0]):
            idx, lvl = [], []
            start = 0
            for li, n in enumerate(counts):
                k = min(n, cfg.rpn_pre_nms_top_k)
                top = torch.topk(obj[i, start : start + n], k).indices + start
                idx.append(top)
                lvl.append(torch.full((k,), li, dtype=torch.int64, device=obj.device))
                start += n
            idx, lvl = torch.cat(idx), torch.cat(lvl)
            boxes = clip_boxes(self.coder.decode(deltas[i, idx].float(), anchors[idx]), image_size)
            scores = obj[i, idx].float()
            ok = ((boxes[:, d:] - boxes[:, :d]) >= cfg.min_box_size).all(dim=1)
            boxes, scores, lvl = boxes[ok], scores[ok], lvl[ok]
            keep = ops.batched_nms(boxes, scores, lvl, cfg.rpn_nms_iou, max_output=post)  # by score
            out.append(boxes[keep])
        return out

    def _losses(self, obj, deltas, anchors, targets) -> dict[str, torch.Tensor]:
        """The RPN losses of :meth:`_losses_reference` (same values to float32 rounding, same
        random draws) for the whole batch at once: one matching pass, the draws of :meth:`_sample`
        image by image (``sample_anchors_batched``), then masked per-image means."""
        cfg = self.cfg
        b = obj.shape[0]
        gt = [t["boxes"].to(device=obj.device, dtype=torch.float32) for t in targets]
        matches = match_batch(self.matcher, gt, anchors)  # (B, A)
        hardness = None
        if cfg.shem_poolsize is not None:  # objectness o as 2-class logits (0, o), as in _sample
            o = obj.detach()
            hardness = foreground_probability(torch.stack([torch.zeros_like(o), o], dim=-1))
        pos, neg = sample_anchors_batched(
            matches >= 0,
            matches == NEGATIVE,
            int(cfg.rpn_batch_size * cfg.rpn_positive_fraction),
            lambda n_pos: max(1, cfg.rpn_batch_size - n_pos),
            hardness,
            cfg.shem_poolsize,
            always_draw=True,
        )
        sel_rows, sel_image = flat_rows(pos | neg)
        target = pos.flatten()[sel_rows].float()
        bce = F.binary_cross_entropy_with_logits(obj.flatten()[sel_rows].float(), target, reduction="none")
        # an image with nothing sampled gives 0 / 0 = NaN, as the per-image mean of nothing does
        cls_l = per_image_sum(bce, sel_image, b) / torch.bincount(sel_image, minlength=b)
        rows, image = flat_rows(pos)
        box_t = self.coder.encode(gather_matched(gt, matches, rows), anchors[rows % anchors.shape[0]])
        pred = deltas.flatten(0, 1)[rows].float()
        box_l = box_regression_loss_batched(pred, box_t, image, b, cfg.smooth_l1_beta)
        return {"rpn_class": cls_l.mean(), "rpn_box": box_l.mean()}

    # --- the per-image reference (the implementation until issue #14) -----------------------------
    def _sample(self, obj: torch.Tensor, matches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor indices for the RPN losses of one image: at most ``rpn_batch_size *
        rpn_positive_fraction`` random positives, and ``max(1, rpn_batch_size - #pos)`` negatives
        mined from the ``shem_poolsize * count`` highest-objectness negatives (MDT's SHEM; None =
        uniform over all negatives)."""
        cfg = self.cfg
        pos = torch.nonzero(matches >= 0).squeeze(1)
        n_pos = min(pos.numel(), int(cfg.rpn_batch_size * cfg.rpn_positive_fraction))
        pos = pos[torch.randperm(pos.numel(), device=pos.device)[:n_pos]]
        neg = torch.nonzero(matches == NEGATIVE).squeeze(1)
        count = max(1, cfg.rpn_batch_size - n_pos)
        # objectness o as 2-class logits (0, o): softmax foreground = sigmoid(o)
        two = torch.stack([torch.zeros_like(obj[neg]), obj[neg]], dim=1)
        return pos, neg[shem_negatives(two, count, cfg.shem_poolsize)]

    def _losses_reference(self, obj, deltas, anchors, targets) -> dict[str, torch.Tensor]:
        """:meth:`_losses` one image at a time: the slow reference the batched code is tested
        against (tests/test_losses_batched.py) and timed against (benchmarks/study/loss_step.py)."""
        cfg = self.cfg
        cls_l, box_l = [], []
        for i, t in enumerate(targets):
            gt = t["boxes"].to(device=obj.device, dtype=torch.float32)
            iou = ops.box_iou(gt, anchors) if gt.shape[0] else anchors.new_zeros((0, anchors.shape[0]))
            matches = self.matcher(iou)
            pos, neg = self._sample(obj[i], matches)
            sel = torch.cat([pos, neg])
            target = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).to(obj.dtype)
            cls_l.append(F.binary_cross_entropy_with_logits(obj[i, sel].float(), target.float()))
            box_t = self.coder.encode(gt[matches[pos]], anchors[pos])
            box_l.append(box_regression_loss(deltas[i, pos].float(), box_t, cfg.smooth_l1_beta))
        return {"rpn_class": torch.stack(cls_l).mean(), "rpn_box": torch.stack(box_l).mean()}
