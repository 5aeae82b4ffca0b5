"""benchmarks/study/hole_probe.py: the read-outs it compares (docs/models.md, "3D Mask R-CNN")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import toy_data
from benchmarks.study.hole_probe import RoIProbe, main, object_boxes, object_patches


def test_object_boxes_are_the_generators_boxes_of_whole_objects():
    spec = toy_data.task_spec("donuts_shape", 3)
    r, checked = int(spec.radii[0]), 0
    for i in range(20):
        box = np.asarray(toy_data.generate_sample(spec, 0, i).boxes)[0]
        lo, hi = box[:3].astype(int), box[3:].astype(int)
        if np.any(hi - lo != 2 * r - 1):
            continue  # cut by the border: object_patches skips these
        centre = torch.from_numpy((lo + hi) // 2)[None]  # object_patches' centre rule
        assert object_boxes(centre, r)[0].tolist() == box.tolist()
        checked += 1
    assert checked > 0


def test_roi_probe_reads_the_class_through_the_two_stage_box_head_and_trains_the_backbone():
    spec = toy_data.task_spec("donuts_shape", 3)
    x, y, c = object_patches(spec, 2, 32, seed=0)
    torch.manual_seed(0)
    net = RoIProbe(3, "fc_centre", int(spec.radii[0]), stem_kernel=3, strides=((1, 1, 1), 2, 2, 2, 2))
    assert net.head.kind == "fc_centre" and net.head.centre is not None
    logits = net(x, c)
    assert logits.shape == (2, 2)
    torch.nn.functional.cross_entropy(logits, y).backward()
    stem = net.backbone.encoder.c1[0].weight.grad
    assert stem is not None and stem.abs().sum() > 0


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()  # the probe's main() sets one thread for the whole process
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("read", ["centre", "fc"])
def test_hole_probe_runs_end_to_end_and_reports_held_out_accuracy(read, capsys, keep_threads):
    main(["--dim", "3", "--stem-kernel", "3", "--stem-stride", "1", "--read", read, "--steps", "1",
          "--every", "1", "--n", "2", "--n-test", "2", "--batch", "2"])
    out = capsys.readouterr().out
    assert ("BoxHead 'fc' on the RoI" in out) == (read == "fc")
    assert "held-out" in out


def test_hole_probe_refuses_an_unknown_read_out():
    with pytest.raises(SystemExit):
        main(["--read", "mlp"])
