"""The cpu preset's quality bar (slow: about 4-6 min on an idle 2-core CPU; run with -m slow)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_cpu_preset_retina_unet_donuts_shape_reaches_map_09(tmp_path):
    from retina_unet.pipeline import train_and_evaluate
    from retina_unet.training import preset

    res = train_and_evaluate(
        preset("cpu", 2, model="retina_unet", task="donuts_shape", n_train=1000, seed=0),
        tmp_path / "run",
        progress=False,
    )
    assert res["mAP"] >= 0.9, res["ap"]
