"""``ModelConfig``: one frozen dataclass for every detector, with the paper's (MDT) 2D defaults.

``model_config(spatial_dims, size)`` resolves presets:
- "paper": the published settings (ResNet50 [3, 4, 6, 3]; 48 start filters / 192 FPN channels in 2D,
  18 / 36 in 3D; detection on P2-P5; MDT's anisotropic 3D strides, axis 0 = slices; cubic 3D anchors
  16 / 32 / 64 / 128 fitted to the isotropic 3D toys).
- "cpu": small enough to train on a 2-core CPU in minutes (blocks (1, 1, 1, 1), 16 filters, FPN 48,
  heads 64 x 2 convs, detection on P3-P5 with base anchors 32/64/128 px x 3 scales, so P3's anchors
  (32, 40, 51 px on a stride-8 grid) bracket the ~39 px toy discs; in 3D 8 filters, FPN 32, detection
  on P2-P4 with anchors 16/32/64 for the ~19 voxel balls of the 64^3 toys, a 3^3 stem at stride 1
  (P2 at stride 2), negatives sampled uniformly; channels-last in both).
- "tiny": for unit tests only.
Any field can be overridden: ``model_config(2, "cpu", num_classes=3)``. Every setting next to MDT's
value and the paper's text, and why it differs where it does: ``docs/models.md``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

Stride = int | tuple[int, ...]
INITS = ("pytorch", "he_fan_out")
BOX_HEADS = ("fc", "conv", "fc_centre", "conv_centre")  # ModelConfig.box_head


@dataclass(frozen=True)
class ModelConfig:
    """Settings of every model. Defaults = MDT's toy settings in 2D (see ``model_config`` for 3D)."""

    # --- data -------------------------------------------------------------------------------------
    spatial_dims: int = 2
    in_channels: int = 1
    num_classes: int = 2  # foreground classes; labels are 1..num_classes, 0 = background

    # --- backbone (ResNet-FPN) --------------------------------------------------------------------
    start_filters: int = 48  # 18 in 3D
    blocks: tuple[int, ...] = (3, 4, 6, 3)  # ResNet50
    fpn_channels: int = 192  # 36 in 3D
    fine_channels: int | None = None  # channels of the U-FPN levels P1/P0 (None = fpn_channels)
    norm: str | None = None  # None (paper) | "batch" | "instance" | "group"
    # per stage (stem, pool, C3, C4, C5): an int or one stride per axis; () = 2 everywhere
    strides: tuple[Stride, ...] = ()
    # kernel of the stem convolution C1 (ResNet, MDT: 7). 3 with a stride-1 stem is the only 3D
    # setting measured to learn the 27-voxel donut hole (3-5x the step cost); the 3D cpu size uses
    # it (docs/models.md, "The stem and the hole")
    stem_kernel: int = 7
    # inputs whose size is not a multiple of the deepest stride are padded (replicate, at the high
    # end) and outputs cropped back; False: such inputs raise a ValueError naming the multiple
    pad_to_multiple: bool = True
    # "pytorch": PyTorch's default initialisation (MDT's toy configs, weight_init=None);
    # "he_fan_out": He-normal fan-out convs with zero biases (this project's earlier choice)
    init: str = "pytorch"
    # Activations and conv weights in channels-last memory layout (NHWC / NDHWC). Same arithmetic,
    # other rounding order; oneDNN's CPU convolutions are faster on it (the cpu size turns it on:
    # docs/models.md, "cpu preset"). Not part of the paper: a layout, not a model setting.
    channels_last: bool = False

    # --- heads -----------------------------------------------------------------------------------
    head_channels: int = 256
    head_convs: int = 4  # 3x3 convs in each Retina subnet (class / box)

    # --- anchors (one-stage) ----------------------------------------------------------------------
    detection_levels: tuple[int, ...] = (2, 3, 4, 5)
    # base anchor size per detection level; an int (all axes) or one size per axis
    anchor_sizes: tuple[Stride, ...] = (8, 16, 32, 64)
    anchor_scales_per_octave: int = 3  # sizes base * 2**(i/3), i = 0, 1, 2
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # extent(axis -2) / extent(axis -1)

    # --- matching, coding, losses (one-stage) -----------------------------------------------------
    match_fg_iou: float = 0.5  # IoU >= this -> positive anchor
    match_bg_iou: float = 0.1  # IoU < this -> negative anchor, in between ignored (MDT: 0.1 2D, 0.01 3D)
    match_low_quality: bool = True  # each object's best anchors are positive too (as MDT)
    box_center_weight: float = 10.0  # delta weights = 1 / MDT's bbox std (0.1 centre, 0.2 size)
    box_size_weight: float = 5.0
    box_log_clamp: float = math.log(1000.0 / 16)
    class_loss: str = "shem"  # "shem" (softmax + hard-negative mining, paper) | "focal"
    # positives per image that enter the class and box losses, drawn at random from the matched
    # anchors (MDT: rpn_train_anchors_per_image // 2 = 1 for the toys); None = all matched anchors
    max_positives: int | None = 1
    neg_pos_ratio: float = 1.0  # MDT: as many mined negatives as positives (at least 1)
    # negatives are drawn from the shem_poolsize * count hardest ones (MDT toys: 10);
    # None = from all negatives (uniform)
    shem_poolsize: int | None = 10
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    smooth_l1_beta: float = 1.0
    seg_loss_weight: float = 1.0  # weight of (soft Dice + CE) / 2 on P0
    # segmentation targets of the P0 head: "binary" (foreground vs background) or "per_class"
    # (background + one channel per class); None = the model's MDT setting (Retina U-Net binary,
    # U-FRCNN+ and DetU-Net per class). Models resolve it into their ``cfg``.
    seg_classes: str | None = None

    # --- post-processing --------------------------------------------------------------------------
    score_floor: float = 0.1  # MDT model_min_confidence
    pre_nms_top_k: int = 1000  # per image, over all levels and classes
    nms_iou: float = 1e-5  # MDT's toy setting: overlapping boxes of one class are suppressed
    max_detections: int = 10  # per image
    min_box_size: float = 1e-2

    # --- two-stage (Mask R-CNN / Faster R-CNN+ / U-FRCNN+) ----------------------------------------
    rpn_anchor_scales_per_octave: int = 1
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.1  # MDT: negatives below 0.1 (2D) / 0.01 (3D)
    # anchors per image in the RPN loss (MDT toys rpn_train_anchors_per_image: 2): at most
    # batch * fraction positives, the rest negatives mined as in the one-stage loss (shem_poolsize)
    rpn_batch_size: int = 2
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_top_k: int = 2000  # per level
    rpn_post_nms_top_k_train: int = 300
    rpn_post_nms_top_k_test: int = 300
    rpn_nms_iou: float = 0.7
    # sampled RoIs per image (MDT toys train_rois_per_image: 2, roi_positive_ratio: 0.5); the
    # negatives are drawn uniformly (MDT mines them; docs/models.md)
    roi_batch_size: int = 2
    roi_positive_fraction: float = 0.5
    roi_fg_iou: float = 0.5  # MDT: 0.5 (2D) / 0.3 (3D)
    roi_bg_iou: float = 0.1  # RoIs below this are negatives, in between ignored (MDT: 0.1 / 0.01)
    # level = round(canonical_level + log2(size / canonical_size)); 80 at P4 is MDT's rule for
    # 320^2 images (round(4 + log2(sqrt(h * w) / 320)) on P2..P5 indexed 0..3), so ~40 px -> P3
    roi_canonical_size: float = 80.0
    roi_canonical_level: int = 4
    box_pool_size: tuple[int, ...] = (7, 7)  # (3, 7, 7) in 3D (axis 0 = slices)
    mask_pool_size: tuple[int, ...] = (14, 14)  # (5, 14, 14) in 3D; masks are twice that
    # positive RoIs per image that train the mask head, the first of the sampled positives (already
    # in random order); None = all sampled positives (MDT: every positive of its 2 sampled RoIs, i.e. 1)
    mask_rois_per_image: int | None = None
    fc_channels: int = 1024  # box head width
    # "fc" (MDT): the class from FC layers on the flattened RoI; "conv": 3^D convolutions
    # (head_channels wide) over the RoI's bins, the class from their maximum; "fc_centre": the FC
    # head plus a linear read of the RoI's centre bin added to its class logits; "conv_centre": the
    # same read after two 3^D convolutions over the bins (measured worse; docs/models.md, "3D Mask
    # R-CNN", for the last three)
    box_head: str = "fc"
    # weight of the box head's class loss in the two-stage total (MDT: 1, like every other term)
    roi_class_loss_weight: float = 1.0

    # --- DetU-Net ---------------------------------------------------------------------------------
    detunet_max_components: int = 5  # largest connected components kept per class and image

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.num_classes < 1 or self.in_channels < 1:
            raise ValueError("num_classes and in_channels must be >= 1")
        if len(self.anchor_sizes) != len(self.detection_levels):
            raise ValueError(
                f"anchor_sizes ({len(self.anchor_sizes)}) must give one size per detection level "
                f"{self.detection_levels}"
            )
        if any(k not in (2, 3, 4, 5) for k in self.detection_levels):
            raise ValueError(f"detection_levels must lie in 2..5, got {self.detection_levels}")
        for name in ("box_pool_size", "mask_pool_size"):
            if len(getattr(self, name)) != self.spatial_dims:
                raise ValueError(f"{name} must have {self.spatial_dims} entries, got {getattr(self, name)}")
        if self.class_loss not in ("shem", "focal"):
            raise ValueError(f"class_loss must be 'shem' or 'focal', got {self.class_loss!r}")
        if not 0 <= self.match_bg_iou <= self.match_fg_iou <= 1:
            raise ValueError("need 0 <= match_bg_iou <= match_fg_iou <= 1")
        if not 0 <= self.roi_bg_iou <= self.roi_fg_iou <= 1:
            raise ValueError("need 0 <= roi_bg_iou <= roi_fg_iou <= 1")
        if self.seg_classes not in (None, "binary", "per_class"):
            raise ValueError(f"seg_classes must be 'binary', 'per_class' or None, got {self.seg_classes!r}")
        if self.box_head not in BOX_HEADS:
            raise ValueError(f"box_head must be one of {BOX_HEADS}, got {self.box_head!r}")
        if not (math.isfinite(self.roi_class_loss_weight) and self.roi_class_loss_weight > 0):
            raise ValueError(f"roi_class_loss_weight must be a finite number > 0, got {self.roi_class_loss_weight}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.max_positives is not None and self.max_positives < 1:
            raise ValueError(f"max_positives must be >= 1 or None, got {self.max_positives}")
        if self.mask_rois_per_image is not None and self.mask_rois_per_image < 1:
            raise ValueError(f"mask_rois_per_image must be >= 1 or None, got {self.mask_rois_per_image}")
        if self.shem_poolsize is not None and self.shem_poolsize < 1:
            raise ValueError(f"shem_poolsize must be >= 1 or None, got {self.shem_poolsize}")

    def replace(self, **overrides) -> ModelConfig:
        return dataclasses.replace(self, **overrides)


SIZES = ("paper", "cpu", "tiny")


def model_config(spatial_dims: int, size: str = "paper", **overrides) -> ModelConfig:
    """The preset ``size`` ("paper", "cpu", "tiny") for 2D or 3D, with ``overrides`` applied."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    d = spatial_dims
    base: dict = {"spatial_dims": d}
    if d == 3:
        # MDT 3D: negatives below IoU 0.01 (anchors, RPN, RoIs), positive RoIs from IoU 0.3
        base.update(
            box_pool_size=(3, 7, 7),
            mask_pool_size=(5, 14, 14),
            match_bg_iou=0.01,
            rpn_bg_iou=0.01,
            roi_bg_iou=0.01,
            roi_fg_iou=0.3,
        )
    if size == "paper":
        if d == 3:
            # MDT 3D: 18 filters, FPN 36, slices (axis 0) at strides 1, 2, 4, 8 for P2..P5. Anchors
            # fitted to the isotropic 3D toys (docs/models.md, "3D anchors"): cubes, P2's scales
            # 16 / 20 / 25 bracket the 14-19 voxel balls.
            base.update(
                start_filters=18,
                fpn_channels=36,
                strides=((1, 2, 2), (1, 2, 2), 2, 2, 2),
                anchor_sizes=(16, 32, 64, 128),
                head_channels=64,
                fc_channels=512,
            )
    elif size == "cpu":
        base.update(
            start_filters=16,
            blocks=(1, 1, 1, 1),
            fpn_channels=48,
            fine_channels=8,
            head_channels=64,
            head_convs=2,
            # P3 (stride 8) anchors 32 / 40 / 51 px bracket the ~39 px discs with a fine centre grid
            detection_levels=(3, 4, 5),
            anchor_sizes=(32, 64, 128),
            fc_channels=256,
            rpn_pre_nms_top_k=1000,
            rpn_post_nms_top_k_train=200,
            rpn_post_nms_top_k_test=100,
            # Sampling and initialisation: this project's choices, not MDT's toy settings, in this
            # preset only. MDT trains on 1 positive + 1 mined negative anchor per image (and 2 RPN
            # anchors / 2 RoIs) for 24 x 100 batches of 20; in the cpu budget (16 x 50 batches of 16)
            # that reached test mAP 0.538 with Retina U-Net on donuts_shape n_train=1000 seed 0,
            # against 0.959 with these settings (docs/models.md, "cpu preset").
            init="he_fan_out",
            max_positives=None,
            shem_poolsize=20,
            match_bg_iou=0.3 if d == 2 else 0.1,
            rpn_bg_iou=0.3,
            rpn_batch_size=64,
            # 16 RoIs per image (a third positive) and the mask head on 2 of the positives: the box
            # and mask heads on 64 RoIs / ~12 positives per image made a Mask R-CNN step 3-4x the cost
            # of a Retina U-Net step on the CPU (docs/models.md, "cpu preset", with the measurement)
            roi_batch_size=16,
            mask_rois_per_image=2,
            roi_positive_fraction=0.33,
            roi_bg_iou=0.5 if d == 2 else 0.3,
        )
        # oneDNN's CPU convolutions on NHWC / NDHWC: a Retina U-Net train step 1.2-1.5x faster in 2D,
        # 1.5x in 3D (docs/speed.md)
        base.update(channels_last=True)
        if d == 3:
            # 64^3 volumes, balls of radius 10 (~19 voxel boxes): P2 anchors 16 / 20 / 25. A 3^3 stem at
            # stride 1 puts P2 at stride 2: with MDT's 7^3 stem at stride 2 no model learnt the class
            # (the 27-voxel hole) in 2,000-6,000 steps; with this one Retina Net and Retina U-Net do
            # (docs/models.md, "The stem and the hole")
            base.update(
                stem_kernel=3,
                strides=((1, 1, 1), 2, 2, 2, 2),
                # negatives drawn uniformly from all of them: with the 20 x count hardest (of ~5,000
                # anchors per 32^3 patch, where 2D's pool holds a quarter of ~750) Retina Net 3D did
                # not learn at all (docs/models.md, "3D learning")
                shem_poolsize=None,
                start_filters=8,
                fpn_channels=32,
                fine_channels=8,
                head_channels=32,
                fc_channels=128,
                detection_levels=(2, 3, 4),
                anchor_sizes=(16, 32, 64),
                box_pool_size=(5, 5, 5),
                mask_pool_size=(7, 7, 7),
                # the two-stage class: MDT's FC box head never read the hole (test mAP 0.56-0.65); a
                # linear read of the RoI's centre bin beside it, on positives from IoU 0.5 so that
                # the centre bin holds the object's centre, reached 0.76-0.86 over three seeds
                # (docs/models.md, "3D Mask R-CNN")
                box_head="fc_centre",
                roi_fg_iou=0.5,
            )
    else:  # tiny
        base.update(
            start_filters=4,
            blocks=(1, 1, 1, 1),
            fpn_channels=8,
            fine_channels=4,
            head_channels=8,
            head_convs=1,
            detection_levels=(3, 4),
            anchor_sizes=(8, 16),
            anchor_scales_per_octave=2,
            fc_channels=16,
            rpn_pre_nms_top_k=100,
            rpn_post_nms_top_k_train=20,
            rpn_post_nms_top_k_test=20,
            rpn_batch_size=16,
            roi_batch_size=8,
            box_pool_size=(3,) * d,
            mask_pool_size=(4,) * d,
        )
    base.update(overrides)
    return ModelConfig(**base)
