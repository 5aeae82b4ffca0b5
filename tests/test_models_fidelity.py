"""The models follow the paper / MDT where docs/models.md says they do: binary Retina U-Net
segmentation, foreground-only Dice, C0 in series, MDT's matching and sampling, RoI levels, 3D anchors."""

from __future__ import annotations

import math

import pytest
import torch

from retina_unet.models import build_model, model_config
from retina_unet.models.losses import batch_dice_fg, cap_positives, dice_ce_loss
from retina_unet.models.matcher import IGNORE, NEGATIVE, Matcher
from retina_unet.models.roi_heads import assign_levels
from retina_unet.models.segmentation import SegHead
from retina_unet.nn.backbone import ResNetFPN
from retina_unet.ops.reference import box_iou_reference


def tiny(d: int, **kw):
    return model_config(d, "tiny", pre_nms_top_k=50, **kw)


def two_class_batch():
    """One image, a class-2 square (class map value 2) on noise."""
    torch.manual_seed(0)
    images = torch.rand(1, 1, 64, 64)
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:30, 12:32] = 2
    t = {"boxes": torch.tensor([[10.0, 12, 30, 32]]), "labels": torch.tensor([2]), "masks": masks[0]}
    return images, [t]


# --- 1. segmentation classes ---------------------------------------------------------------------
def seg_head_of(model):
    return model.network.seg_head if hasattr(model, "network") else model.seg_head


@pytest.mark.parametrize(
    "name, default, channels",
    [("retina_unet", "binary", 2), ("ufrcnn_plus", "per_class", 3), ("detunet", "per_class", 3)],
)
def test_seg_classes_default_per_model_and_recorded(name, default, channels):
    model = build_model(name, tiny(2))
    assert model.cfg.seg_classes == default  # resolved into the model's config
    assert seg_head_of(model).conv.out_channels == channels
    model.eval()
    images, _ = two_class_batch()
    assert model.predict(images)[0]["seg"].shape == (channels, 64, 64)


def test_seg_classes_switch_changes_channels_and_targets():
    per_class = build_model("retina_unet", tiny(2, seg_classes="per_class"))
    binary = build_model("retina_unet", tiny(2, seg_classes="binary"))
    assert seg_head_of(per_class).conv.out_channels == 3 and seg_head_of(binary).conv.out_channels == 2
    masks = two_class_batch()[1][0]["masks"][None].long()
    assert torch.equal(seg_head_of(binary).targets(masks), (masks > 0).long())
    assert torch.equal(seg_head_of(per_class).targets(masks), masks)
    # a prediction of "class 1" on class-2 pixels is right for binary targets, wrong per class
    onehot1 = torch.nn.functional.one_hot((masks > 0).long(), 3).movedim(-1, 1).float() * 20
    assert SegHead(2, 4, 2, "per_class").loss(onehot1, masks)["seg"] > 0.4
    assert SegHead(2, 4, 2, "binary").loss(onehot1[:, :2], masks)["seg"] < 1e-3


def test_seg_classes_bad_values():
    with pytest.raises(ValueError, match="seg_classes"):
        model_config(2, "tiny", seg_classes="multi")
    with pytest.raises(ValueError, match="per_class"):
        build_model("detunet", tiny(2, seg_classes="binary"))


# --- 2. Dice over foreground channels only --------------------------------------------------------
def test_dice_ignores_background_channel():
    torch.manual_seed(0)
    probs = torch.rand(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    onehot = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float()
    ref = batch_dice_fg(probs, onehot)
    changed_bg = probs.clone()
    changed_bg[:, 0] = torch.rand(2, 8, 8)
    torch.testing.assert_close(batch_dice_fg(changed_bg, onehot), ref)
    changed_fg = probs.clone()
    changed_fg[:, 1] = torch.rand(2, 8, 8)
    assert not torch.isclose(batch_dice_fg(changed_fg, onehot), ref)


def test_dice_term_of_a_perfect_foreground_is_zero_even_with_bad_background():
    """Background wrong everywhere but the foreground channels exact: Dice term 0 (it would be 1/3
    if background counted)."""
    target = torch.zeros(1, 8, 8, dtype=torch.int64)
    target[0, 2:5, 2:5] = 1
    onehot = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float()
    probs = onehot.clone()
    probs[:, 0] = 0.0
    assert 1 - batch_dice_fg(probs, onehot) < 1e-6
    logits = onehot * 50
    assert dice_ce_loss(logits, target)["seg_dice"] < 1e-4


# --- 3. C0 in series ------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [2, 3])
def test_c0_feeds_the_encoder(d):
    torch.manual_seed(0)
    net = ResNetFPN(d, 1, 4, (1, 1, 1, 1), 8, min_level=0, fine_channels=4)
    x = torch.rand(1, 1, *(32,) * d)
    out = net(x)
    deep = sum(out[k].sum() for k in (2, 3, 4, 5))
    deep.backward()
    grad = net.encoder.c0[0][0].weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # perturbing C0 changes P2..P5
    with torch.no_grad():
        net.encoder.c0[0][0].weight.mul_(1.5)
        out2 = net(x)
    for k in (2, 3, 4, 5):
        assert not torch.allclose(out[k].detach(), out2[k])


def test_retina_unet_detection_head_reaches_c0():
    torch.manual_seed(0)
    model = build_model("retina_unet", tiny(2))
    images, targets = two_class_batch()
    out = model.network(images)
    (out["cls"].sum() + out["box"].sum()).backward()
    assert model.network.backbone.encoder.c0[0][0].weight.grad.abs().sum() > 0


# --- 4. matching and sampling ---------------------------------------------------------------------
@pytest.mark.parametrize("d, bg", [(2, 0.1), (3, 0.01)])
def test_anchor_negatives_below_mdt_threshold(d, bg):
    cfg = model_config(d, "paper")
    m = Matcher(cfg.match_fg_iou, cfg.match_bg_iou, cfg.match_low_quality)
    iou = torch.tensor([[0.9, bg * 1.5, bg * 0.5, 0.3]])
    assert m(iou).tolist() == [0, IGNORE, NEGATIVE, IGNORE]


@pytest.mark.parametrize("d", [2, 3])
def test_cpu_preset_keeps_its_measured_sampling(d):
    """The cpu preset's documented deviation (docs/models.md, "cpu preset sampling"); paper is MDT's."""
    cpu, paper = model_config(d, "cpu"), model_config(d, "paper")
    # 3D: negatives drawn uniformly (the mined pool did not learn in 3D: docs/models.md, "3D learning")
    assert (cpu.max_positives, cpu.shem_poolsize, cpu.init) == (None, 20 if d == 2 else None, "he_fan_out")
    assert cpu.match_bg_iou == (0.3 if d == 2 else 0.1) and (cpu.rpn_batch_size, cpu.roi_batch_size) == (64, 16)
    assert cpu.mask_rois_per_image == 2 and cpu.channels_last
    assert (paper.max_positives, paper.shem_poolsize, paper.init) == (1, 10, "pytorch")
    assert (paper.rpn_batch_size, paper.roi_batch_size, paper.mask_rois_per_image) == (2, 2, None)
    assert not paper.channels_last


def test_positives_capped_at_random():
    matches = torch.tensor([0, 0, 0, NEGATIVE, IGNORE, 1, 1])
    torch.manual_seed(0)
    out = cap_positives(matches, 1)
    assert int((out >= 0).sum()) == 1
    assert torch.equal(out[matches < 0], matches[matches < 0])
    assert torch.equal(cap_positives(matches, None), matches)
    assert model_config(2).max_positives == 1 and model_config(2).shem_poolsize == 10


def test_default_init_is_pytorch_and_he_is_an_option():
    torch.manual_seed(0)
    a = build_model("retina_net", tiny(2))
    torch.manual_seed(0)
    b = build_model("retina_net", tiny(2, init="he_fan_out"))
    wa = a.network.backbone.encoder.c1[0].weight
    wb = b.network.backbone.encoder.c1[0].weight
    fan_in = wa[0].numel()
    assert wa.abs().max() <= 1 / math.sqrt(fan_in) + 1e-6  # PyTorch's kaiming_uniform(a=sqrt(5)) bound
    assert wb.abs().max() > 1 / math.sqrt(fan_in)
    with pytest.raises(ValueError, match="init"):
        model_config(2, init="xavier")


def test_rpn_samples_one_positive_and_hard_negatives():
    assert model_config(2).rpn_batch_size == 2  # MDT toys: rpn_train_anchors_per_image
    model = build_model("mask_rcnn", tiny(2, rpn_batch_size=2))
    rpn = model.rpn
    matches = torch.full((100,), NEGATIVE)
    matches[:5] = 0
    obj = torch.zeros(100)
    obj[50:55] = 10.0  # the five hardest negatives
    torch.manual_seed(0)
    pos, neg = rpn._sample(obj, matches)
    assert pos.numel() == 1 and int(pos) < 5
    assert neg.numel() == 1
    # pool = shem_poolsize * 1 = 10 hardest; with the 5 hard ones in it, over many draws
    hits = sum(int(rpn._sample(obj, matches)[1]) in range(50, 55) for _ in range(40))
    assert hits > 10


# --- 5. RoI level assignment ----------------------------------------------------------------------
@pytest.mark.parametrize("size", ["paper", "cpu", "tiny"])
def test_a_40px_object_pools_from_p3(size):
    cfg = model_config(2, size)
    levels = tuple(sorted(cfg.detection_levels))
    boxes = torch.tensor([[100.0, 100, 140, 140], [100.0, 100, 139, 139], [0.0, 0, 41, 41]])
    lv = assign_levels(boxes, levels, cfg.roi_canonical_size, cfg.roi_canonical_level)
    assert lv.tolist() == [3, 3, 3]


# --- 3D anchors fit the 3D toys -------------------------------------------------------------------
def toy_3d_boxes(n: int = 150, seed: int = 0) -> torch.Tensor:
    """Boxes of 3D toy objects placed as the generator places them (64^3, margin 5, every radius of
    the 3D tasks, so objects clipped by the border included), ``(m, 6)``."""
    import toy_data

    g = torch.Generator().manual_seed(seed)
    specs = [toy_data.task_spec(task, 3) for task in toy_data.TASKS]
    out = []
    for shape, margin, r in sorted({(s.shape, s.margin, r) for s in specs for r in s.radii}):
        size = torch.tensor(shape)
        reach = math.ceil(r) - 1
        c = torch.stack([torch.randint(margin, s - margin, (n,), generator=g) for s in shape], 1)
        # the extreme centres too: every axis at the margin, and one axis at the margin
        c = torch.cat([c, torch.full((1, 3), margin), torch.tensor([[margin, 32, 32]])])
        lo = (c - reach).clamp(min=0)
        hi = torch.minimum(c + reach + 1, size)
        out.append(torch.cat([lo, hi], 1).float())
    return torch.cat(out)


@pytest.mark.parametrize("size", ["paper", "cpu"])
def test_3d_anchors_fit_the_3d_toys(size):
    """Best anchor IoU >= 0.5 for every 3D toy object size and position (so every object gets
    regular positives, not only its forced best anchor)."""
    cfg = model_config(3, size, blocks=(1, 1, 1, 1), start_filters=4, fpn_channels=8, head_channels=8)
    model = build_model("retina_net", cfg)
    strides = [model.network.backbone.strides[k] for k in cfg.detection_levels]
    shapes = [tuple(64 // s for s in st) for st in strides]
    anchors = model.anchors(shapes, torch.device("cpu"))
    boxes = toy_3d_boxes()
    best = torch.cat([box_iou_reference(b, anchors).max(dim=1).values for b in boxes.split(50)])
    assert best.min() >= 0.5, (best.min(), boxes[best.argmin()])


# --- stem kernel (an option, default 7; docs/models.md "The stem and the hole") ----------------
@pytest.mark.parametrize("name", ["retina_net", "retina_unet", "mask_rcnn", "detunet"])
@pytest.mark.parametrize("k", [3, 7])
def test_stem_kernel_reaches_every_model(name, k):
    model = build_model(name, tiny(3, stem_kernel=k))
    conv = model.network.backbone.encoder.c1[0] if hasattr(model, "network") else model.backbone.encoder.c1[0]
    assert conv.kernel_size == (k, k, k)
    assert conv.padding == (k // 2,) * 3  # 'same'-style: the stem keeps the grid of the strides


@pytest.mark.parametrize("k", [0, 2, 4])
def test_stem_kernel_must_be_odd_and_positive(k):
    with pytest.raises(ValueError, match="stem_kernel"):
        ResNetFPN(3, 1, 4, (1, 1, 1, 1), 8, stem_kernel=k)


# --- box head kind (MDT's FC head, or the convolutional option; docs/models.md "3D Mask R-CNN") --
@pytest.mark.parametrize("name", ["mask_rcnn", "faster_rcnn_plus"])
@pytest.mark.parametrize("d", [2, 3])
def test_box_head_kind_reaches_the_two_stage_models(name, d):
    fc = build_model(name, tiny(d)).box_head
    conv = build_model(name, tiny(d, box_head="conv")).box_head
    assert isinstance(fc.trunk, torch.nn.Identity) and fc.cls.in_features == tiny(d).fc_channels
    convs = [m for m in conv.trunk.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d)]
    assert len(convs) == 2 and convs[0].kernel_size == (3,) * d
    assert conv.cls.in_features == tiny(d).head_channels


@pytest.mark.parametrize("name", ["mask_rcnn", "faster_rcnn_plus", "ufrcnn_plus"])
def test_centre_box_heads_reach_the_two_stage_models(name):
    head = build_model(name, tiny(3, box_head="fc_centre")).box_head
    assert isinstance(head.trunk, torch.nn.Identity) and head.cls.in_features == tiny(3).fc_channels
    assert head.centre.in_features == tiny(3).fpn_channels and head.centre.out_features == 3
    assert isinstance(head.centre_trunk, torch.nn.Identity)
    conv = build_model(name, tiny(3, box_head="conv_centre")).box_head
    assert isinstance(conv.trunk, torch.nn.Identity) and conv.cls.in_features == tiny(3).fc_channels
    convs = [m for m in conv.centre_trunk.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == 2 and convs[0].in_channels == tiny(3).fpn_channels
    assert conv.centre.in_features == tiny(3).head_channels == convs[1].out_channels
    assert build_model(name, tiny(3)).box_head.centre is None  # MDT's FC head by default


@pytest.mark.parametrize(
    "pool, bins",
    [
        ((5, 5, 5), (slice(2, 3),) * 3),
        ((4, 4), (slice(1, 3),) * 2),  # even: the two middle bins, averaged
        ((3, 6, 5), (slice(1, 2), slice(2, 4), slice(2, 3))),
    ],
)
def test_fc_centre_adds_a_linear_read_of_the_centre_bin(pool, bins):
    """The class logits are the FC head's plus a linear map of the centre bin (the mean of the two
    middle bins along an even axis); features off the centre reach the class only through the FC."""
    from retina_unet.models.roi_heads import BoxHead

    torch.manual_seed(0)
    d = len(pool)
    head = BoxHead(d, 4, pool, 16, 2, kind="fc_centre")
    fc = BoxHead(d, 4, pool, 16, 2, kind="fc")
    fc.load_state_dict({k: v for k, v in head.state_dict().items() if not k.startswith("centre.")})
    x = torch.randn(3, 4, *pool)
    centre = x[(..., *bins)].flatten(2).mean(2)
    torch.testing.assert_close(head(x)[0], fc(x)[0] + head.centre(centre))
    torch.testing.assert_close(head(x)[1], fc(x)[1])  # the deltas are the FC head's
    off = x.clone()
    off[(..., *[slice(0, 1)] * d)] += 5.0  # a corner bin: the centre read does not see it
    torch.testing.assert_close(head(off)[0] - fc(off)[0], head(x)[0] - fc(x)[0])


def test_conv_centre_reads_the_centre_bin_after_its_convolutions():
    """``conv_centre``: the FC head's logits plus a linear map of the centre bin of two 3^3
    convolutions over the bins, whose receptive field (5^3) covers the whole 5^3 RoI: unlike
    ``fc_centre``, a corner bin reaches the centre read."""
    from retina_unet.models.roi_heads import BoxHead

    torch.manual_seed(0)
    pool = (5, 5, 5)
    head = BoxHead(3, 4, pool, 16, 2, kind="conv_centre", conv_channels=6)
    fc = BoxHead(3, 4, pool, 16, 2, kind="fc")
    fc.load_state_dict({k: v for k, v in head.state_dict().items() if k.split(".")[0] in ("fc", "cls", "box")})
    x = torch.randn(3, 4, *pool)
    convs = head.centre_trunk
    assert head.centre.in_features == 6 and len([m for m in convs.modules() if isinstance(m, torch.nn.Conv3d)]) == 2
    torch.testing.assert_close(head(x)[0], fc(x)[0] + head.centre(convs(x)[:, :, 2, 2, 2]))
    torch.testing.assert_close(head(x)[1], fc(x)[1])  # the deltas are the FC head's
    off = x.clone()
    off[:, :, 0, 0, 0] += 5.0
    assert not torch.allclose(head(off)[0] - fc(off)[0], head(x)[0] - fc(x)[0])
    with pytest.raises(ValueError, match="conv_centre"):
        BoxHead(3, 4, pool, 16, 2, kind="conv_centre", convs=0)


def test_roi_class_loss_weight_scales_only_the_box_heads_class_term():
    images, targets = two_class_batch()
    totals = {}
    for w in (1.0, 3.0):
        torch.manual_seed(0)
        model = build_model("mask_rcnn", tiny(2, roi_class_loss_weight=w))
        torch.manual_seed(1)  # the same RoI draws
        totals[w] = model.losses(images, targets)
    one, three = totals[1.0], totals[3.0]
    torch.testing.assert_close(one["class"], three["class"])
    torch.testing.assert_close(three["loss"] - one["loss"], 2 * one["class"])


@pytest.mark.parametrize("w", [0.0, -1.0, float("nan"), float("inf")])
def test_roi_class_loss_weight_must_be_positive_and_finite(w):
    with pytest.raises(ValueError, match="roi_class_loss_weight"):
        tiny(2, roi_class_loss_weight=w)


def test_box_head_must_be_known():
    with pytest.raises(ValueError, match="box_head"):
        tiny(3, box_head="mlp")


def _spike(pool, at, ch=4):
    x = torch.zeros(1, ch, *pool)
    x[(0, slice(None), *at)] = torch.arange(1.0, ch + 1)
    return x


def test_conv_box_head_class_counts_a_cue_wherever_it_falls_in_the_roi():
    """A feature at two interior bins of a 7^3 RoI gives the same class logits with the conv head
    (shared convolutions, max over bins) and different ones with MDT's FC head, which must learn
    the cue at every bin position separately."""
    from retina_unet.models.roi_heads import BoxHead

    torch.manual_seed(0)
    pool = (7, 7, 7)
    conv = BoxHead(3, 4, pool, 16, 2, kind="conv", conv_channels=8)
    fc = BoxHead(3, 4, pool, 16, 2, kind="fc")
    for m in conv.trunk.modules():  # zero biases: no border effect, so the map is exactly shift-equivariant
        if isinstance(m, torch.nn.Conv3d):
            torch.nn.init.zeros_(m.bias)
    for head in (conv, fc):
        torch.nn.init.normal_(head.cls.weight)
    a, b = _spike(pool, (2, 2, 2)), _spike(pool, (4, 3, 4))
    torch.testing.assert_close(conv(a)[0], conv(b)[0])
    assert not torch.allclose(fc(a)[0], fc(b)[0])
    assert conv(a)[1].shape == (1, 3, 6) and fc(a)[1].shape == (1, 3, 6)


def test_conv_box_head_trains_the_backbone():
    images, targets = two_class_batch()
    model = build_model("mask_rcnn", tiny(2, box_head="conv"))
    losses = model.losses(images, targets)
    assert torch.isfinite(losses["loss"])
    losses["class"].backward()
    trunk_grad = sum(p.grad.abs().sum() for p in model.box_head.trunk.parameters() if p.grad is not None)
    stem_grad = model.backbone.encoder.c1[0].weight.grad
    assert trunk_grad > 0 and stem_grad is not None and stem_grad.abs().sum() > 0


# --- the 3D cpu preset (docs/models.md, "The 3D cpu preset") ------------------------------------
def test_3d_cpu_size_has_the_stride_1_3cubed_stem_and_the_others_keep_mdts():
    cpu3 = model_config(3, "cpu")
    assert cpu3.stem_kernel == 3 and tuple(cpu3.strides[0]) == (1, 1, 1)
    for cfg in (model_config(2, "cpu"), model_config(2, "paper"), model_config(3, "paper")):
        assert cfg.stem_kernel == 7
    strides = build_model("retina_net", cpu3).network.backbone.strides
    assert strides[2] == (2, 2, 2)  # P2, where the 3D class is read, at stride 2


def test_3d_cpu_two_stage_models_read_the_centre_bin_from_iou_05_and_the_others_keep_mdts():
    cpu3 = model_config(3, "cpu")
    assert cpu3.box_head == "fc_centre" and cpu3.roi_fg_iou == 0.5
    assert build_model("mask_rcnn", cpu3).box_head.centre is not None
    for cfg in (model_config(2, "cpu"), model_config(2, "paper"), model_config(3, "paper")):
        assert cfg.box_head == "fc" and cfg.roi_class_loss_weight == 1.0
    assert model_config(3, "paper").roi_fg_iou == 0.3 and model_config(2, "cpu").roi_fg_iou == 0.5


def test_3d_cpu_training_preset_schedule():
    from retina_unet.training import preset

    p3, p2 = preset("cpu", 3), preset("cpu", 2)
    assert (p3.epochs, p3.batches_per_epoch, p3.lr_schedule, p3.val_from_epoch, p3.val_subset) == (
        64, 50, "constant", 52, 25)
    assert p3.cpu_bf16 and not p2.cpu_bf16
    assert p3.tta and p3.tta_views == 4 and not p2.tta  # 3D tests with the paper's 4 mirrorings
    assert (p2.epochs, p2.val_from_epoch, p2.val_subset) == (16, 1, 50)  # 2D unchanged
