"""Training patches and the network's input multiple: a patch that must be padded is warned about,
and the presets' patches need no padding for any model."""

from __future__ import annotations

import warnings

import pytest

from retina_unet.models import MODEL_NAMES, build_model, model_config
from retina_unet.training.config import preset
from retina_unet.training.engine import padded_patch_shape, warn_padded_patches


def test_padded_patch_shape_rounds_each_axis_up_to_the_multiple():
    # 48 -> 64 and 40 -> 64 with multiple 32; 33 -> 48 with multiple 16; 32 stays
    assert padded_patch_shape((48, 40, 32), (32, 32, 32)) == (64, 64, 32)
    assert padded_patch_shape((33, 64), (16, 32)) == (48, 64)
    assert padded_patch_shape((32, 32, 32), (32, 32, 32)) is None
    assert padded_patch_shape(None, (32, 32)) is None
    assert padded_patch_shape((50, 50), None) is None


def test_a_padded_patch_is_warned_about_with_the_sizes():
    with pytest.warns(UserWarning, match=r"\(48, 48, 48\).*\(64, 64, 64\) \(2\.4x"):
        warn_padded_patches((48, 48, 48), (32, 32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_padded_patches((64, 64), (32, 32))  # a multiple: silent


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_cpu_preset_patches_need_no_padding(name, d):
    """The cpu preset's patches are multiples of every model's input multiple in its cpu size (a
    48^3 patch padded to 64^3 was why the 3D cpu preset did not learn: docs/models.md)."""
    cfg = preset("cpu", d)
    model = build_model(name, model_config(d, "cpu"))
    assert padded_patch_shape(cfg.patch_size, model.required_multiple) is None
