"""Anchors, box coder, matcher, losses, backbone and DetU-Net's component boxes, in 2D and 3D."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from retina_unet.models.anchors import AnchorGenerator, flatten_head_output
from retina_unet.models.coder import BoxCoder, clip_boxes
from retina_unet.models.detunet import components_to_boxes
from retina_unet.models.losses import dice_ce_loss, focal_class_loss, shem_class_loss
from retina_unet.models.matcher import IGNORE, NEGATIVE, Matcher
from retina_unet.models.roi_heads import assign_levels
from retina_unet.nn import ResNetFPN, norm_layer
from retina_unet.ops.reference import box_iou_reference


# --- anchors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [2, 3])
def test_anchor_count_centres_and_sizes(d):
    gen = AnchorGenerator(d, [8, 16], scales_per_octave=3, ratios=(0.5, 1.0, 2.0))
    assert gen.num_anchors == 9
    shapes, strides = [(4,) * d, (2,) * d], [(4,) * d, (8,) * d]
    a0, a1 = gen(shapes, strides)
    assert a0.shape == (4**d * 9, 2 * d) and a1.shape == (2**d * 9, 2 * d)
    centre = (a0[:, :d] + a0[:, d:]) / 2
    assert torch.allclose(centre[0], torch.full((d,), 2.0))  # (0 + 0.5) * stride 4
    assert torch.allclose(centre[-1], torch.full((d,), 14.0))
    ext = a0[:9, d:] - a0[:9, :d]
    vol = ext.prod(1)
    # ratios keep the in-plane area; scales grow it by 2**(2i/3) (2D) / 2**(3i/3) per axis count
    for i in range(3):
        assert torch.allclose(vol[3 * i : 3 * i + 3], torch.full((3,), 8.0**d * 2 ** (d * i / 3)), rtol=1e-5)
    assert torch.allclose(ext[0, -2] / ext[0, -1], torch.tensor(0.5))
    if d == 3:  # axis 0 (slices) is not affected by the ratio
        assert torch.allclose(ext[:3, 0], torch.full((3,), 8.0))


def test_anisotropic_anchor_sizes():
    gen = AnchorGenerator(3, [(2, 8, 8)], scales_per_octave=1, ratios=(1.0,))
    (a,) = gen([(1, 1, 1)], [(1, 4, 4)])
    assert torch.allclose(a[0, 3:] - a[0, :3], torch.tensor([2.0, 8.0, 8.0]))


@pytest.mark.parametrize("d", [2, 3])
def test_head_flattening_matches_anchor_order(d):
    """Channel a*K + k at position p lands at row p * A + a, the row of that anchor."""
    a_per, k = 3, 2
    shape = (3,) * d if d == 2 else (2, 3, 2)
    x = torch.zeros(1, a_per * k, *shape)
    n_pos = int(torch.tensor(shape).prod())
    pos = torch.arange(n_pos).reshape(shape).float()
    for a in range(a_per):
        x[0, a * k] = pos * 10 + a
    flat = flatten_head_output(x, k)
    assert flat.shape == (1, n_pos * a_per, k)
    assert torch.equal(
        flat[0, :, 0],
        torch.arange(n_pos * a_per).float().div(a_per).floor() * 10 + torch.arange(n_pos * a_per) % a_per,
    )


# --- box coder ------------------------------------------------------------------------------------
boxes_st = st.integers(2, 3).flatmap(
    lambda d: st.tuples(
        st.just(d),
        st.lists(st.floats(-50, 50), min_size=d, max_size=d),
        st.lists(st.floats(1.0, 40.0), min_size=d, max_size=d),
        st.lists(st.floats(-50, 50), min_size=d, max_size=d),
        st.lists(st.floats(1.0, 40.0), min_size=d, max_size=d),
    )
)


@given(boxes_st)
def test_coder_round_trip(case):
    d, c1, e1, c2, e2 = case
    c1, e1, c2, e2 = (torch.tensor([v], dtype=torch.float64) for v in (c1, e1, c2, e2))
    box = torch.cat([c1 - e1 / 2, c1 + e1 / 2], 1)
    ref = torch.cat([c2 - e2 / 2, c2 + e2 / 2], 1)
    coder = BoxCoder()
    deltas = coder.encode(box, ref)
    assert deltas.shape == (1, 2 * d)
    torch.testing.assert_close(coder.decode(deltas, ref), box, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(coder.encode(ref, ref), torch.zeros_like(ref))


def test_coder_clamps_huge_deltas():
    ref = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    out = BoxCoder().decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), ref)
    assert torch.isfinite(out).all() and (out[0, 2:] - out[0, :2] <= 10 * 1000 / 16 + 1e-3).all()


def test_clip_boxes():
    b = torch.tensor([[-5.0, 2.0, 70.0, 30.0]])
    assert torch.equal(clip_boxes(b, (64, 32)), torch.tensor([[0.0, 2.0, 64.0, 30.0]]))


# --- matcher --------------------------------------------------------------------------------------
@given(st.integers(0, 4), st.integers(1, 30), st.integers(0, 10_000))
def test_matcher_properties(g, a, seed):
    gen = torch.Generator().manual_seed(seed)
    lo = torch.rand(g + a, 2, generator=gen) * 50
    boxes = torch.cat([lo, lo + 1 + torch.rand(g + a, 2, generator=gen) * 30], 1)
    gt, anchors = boxes[:g], boxes[g:]
    iou = box_iou_reference(gt, anchors).float()
    m = Matcher(0.5, 0.3, low_quality=True)(iou)
    assert m.shape == (a,) and m.dtype == torch.int64
    if g == 0:
        assert (m == NEGATIVE).all()
        return
    best = iou.max(0).values
    assert (m[best >= 0.5] >= 0).all()
    assert (m[(best < 0.3) & (m >= 0)] >= 0).all()  # only low-quality matches below bg threshold
    for j in range(g):  # every object with any overlap owns (or shares) a positive
        if iou[j].max() > 0:
            assert (m[iou[j] == iou[j].max()] >= 0).all()
    strict = Matcher(0.5, 0.3, low_quality=False)(iou)
    assert ((strict >= 0) == (best >= 0.5)).all()
    assert ((strict == IGNORE) == ((best >= 0.3) & (best < 0.5))).all()
    pos = strict >= 0
    assert torch.equal(iou[strict[pos], torch.nonzero(pos).squeeze(1)], best[pos])


# --- losses ---------------------------------------------------------------------------------------
def test_shem_loss_without_positives_is_finite_and_mines():
    logits = torch.zeros(100, 3, requires_grad=True)
    with torch.no_grad():
        logits[7, 1] = 5.0  # the hardest negative
    m = torch.full((100,), NEGATIVE)
    loss = shem_class_loss(logits, m, torch.zeros(0, dtype=torch.int64), 1.0, poolsize=1)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.nonzero(logits.grad.abs().sum(1)).squeeze(1).tolist() == [7]


def test_shem_and_focal_prefer_correct_logits():
    m = torch.tensor([0, NEGATIVE, NEGATIVE, IGNORE])
    labels = torch.tensor([2])
    good = torch.tensor([[-5.0, -5, 5], [5, -5, -5], [5, -5, -5], [0, 0, 0]])
    bad = -good
    for fn in (shem_class_loss, focal_class_loss):
        assert fn(good, m, labels) < fn(bad, m, labels)


def test_dice_ce_perfect_prediction_is_near_zero():
    target = torch.zeros(1, 8, 8, dtype=torch.int64)
    target[0, 2:5, 2:5] = 1
    target[0, 6:, 6:] = 2
    logits = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * 50
    out = dice_ce_loss(logits, target)
    assert out["seg"] < 1e-3 and out["seg_dice"] < 1e-3


# --- backbone -------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", [None, "batch", "instance", "group"])
def test_backbone_levels_and_norms(norm):
    d, n = (2, 64) if norm == "instance" else (3, 32)  # instance norm needs > 1 element at C5
    net = ResNetFPN(d, 1, 4, (1, 1, 1, 1), 8, norm=norm, min_level=0, fine_channels=4)
    feats = net(torch.rand(2, 1, *(n,) * d))
    for k in range(6):
        assert feats[k].shape == (2, net.out_channels[k]) + (n // 2**k,) * d


def test_norm_factory_rejects_unknown():
    with pytest.raises(ValueError, match="norm"):
        norm_layer("layer", 2, 8)


def test_assign_levels():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 80, 80], [0, 0, 170, 170], [0, 0, 1000, 1000]])
    assert assign_levels(boxes, (2, 3, 4, 5), 80.0, 4).tolist() == [2, 4, 5, 5]


# --- DetU-Net boxes -------------------------------------------------------------------------------
def test_components_to_boxes():
    probs = torch.zeros(3, 10, 12)
    probs[0] = 1.0
    probs[:, 1:4, 2:6] = torch.tensor([0.1, 0.8, 0.1])[:, None, None]  # class 1, 3 x 4
    probs[:, 6:9, 8:9] = torch.tensor([0.3, 0.0, 0.7])[:, None, None]  # class 2, 3 x 1
    probs[:, 0:1, 11:12] = torch.tensor([0.2, 0.0, 0.8])[:, None, None]  # class 2, 1 x 1 (smaller)
    det = components_to_boxes(probs, max_components=1)
    assert det["labels"].tolist() == [1, 2]
    assert torch.equal(det["boxes"], torch.tensor([[1.0, 2, 4, 6], [6, 8, 9, 9]]))
    torch.testing.assert_close(det["scores"], torch.tensor([0.8, 0.7]))
    assert len(components_to_boxes(probs, max_components=2)["labels"]) == 3
    empty = components_to_boxes(torch.stack([torch.ones(4, 4, 4), torch.zeros(4, 4, 4)]), 3)
    assert empty["boxes"].shape == (0, 6)
