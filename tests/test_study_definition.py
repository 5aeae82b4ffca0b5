"""Study definitions: presets, validation of bad input, stable hashes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from retina_unet.study import PRESETS, StudyDefinition, StudyError, preset
from retina_unet.study._hash import canonical_json, stable_hash
from retina_unet.study.execute import config_hash


def small(**kw) -> StudyDefinition:
    base = dict(name="t", tasks=("donuts_shape",), models=("retina_net", "retina_unet"), n_train=(100, 20),
                seeds=(0, 1), dims=(2,), train_preset="smoke")
    return StudyDefinition(**{**base, **kw})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid(name):
    preset(name).validate()


def test_paper_preset_is_the_protocol():
    p = preset("paper")
    assert set(p.tasks) == {"donuts_shape", "donuts_pattern", "circles_scale"}
    assert set(p.n_train) == {1000, 500, 200, 100, 50, 20}
    assert len(p.seeds) >= 3 and p.train_preset == "paper"
    assert {"retina_net", "retina_unet", "mask_rcnn", "faster_rcnn_plus", "detunet"} <= set(p.models)


def test_quick_and_standard_presets_cover_the_question():
    from retina_unet.study.definition import DEFAULT_PRESET, PRESET_NAMES, STUDY_PRESET_NOTES

    q = preset("quick")
    assert set(q.tasks) == {"donuts_shape", "donuts_pattern", "circles_scale"}
    assert {"retina_unet", "retina_net", "mask_rcnn", "detunet"} <= set(q.models)
    assert {1000, 100, 20} <= set(q.n_train) and len(q.seeds) >= 3 and q.train_preset == "cpu"
    s = preset("standard")
    assert set(s.models) == set(preset("paper").models) and len(s.models) == 6 and set(s.tasks) == set(q.tasks)
    assert set(s.n_train) == {1000, 500, 200, 100, 50, 20, 10} and len(s.seeds) == 5 and s.train_preset == "cpu"
    assert PRESET_NAMES == tuple(PRESETS) and DEFAULT_PRESET in PRESETS and set(STUDY_PRESET_NOTES) == set(PRESETS)


def test_grids_grow_by_union_and_protocols_do_not_merge():
    d = small()
    grown = d.union(small(seeds=(2,), models=("mask_rcnn",)))
    assert grown.seeds == (0, 1, 2) and grown.models == ("retina_net", "retina_unet", "mask_rcnn")
    assert grown.protocol_hash == d.protocol_hash != small(train_preset="cpu").protocol_hash
    assert d.added_by(small(seeds=(1, 2))) == {"seeds": [2]} and d.added_by(small(seeds=(0,))) == {}
    assert small(overrides={"epochs": 3}).protocol_hash != d.protocol_hash
    with pytest.raises(StudyError, match="different protocols"):
        d.union(small(overrides={"epochs": 3}))


def test_runs_expand_the_grid_seed_major():
    runs = small().runs()
    assert len(runs) == 2 * 2 * 2
    assert [r.seed for r in runs] == [0, 0, 0, 0, 1, 1, 1, 1]  # a partial study has whole curves
    assert runs[0].label == "donuts_shape-2d-retina_net-n100-s0"
    assert len({r.label for r in runs}) == len(runs)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(tasks=("donuts_shape", "squares")), "unknown task(s) ['squares']"),
        (dict(models=("retina_net", "yolo")), "unknown model(s) ['yolo']"),
        (dict(n_train=(1001, 20)), "larger than the training pool (1000 images)"),
        (dict(n_train=(0,)), "positive integers"),
        (dict(seeds=(-1,)), "non-negative"),
        (dict(dims=(4,)), "only 2 and 3"),
        (dict(models=()), "models: empty"),
        (dict(models=("retina_net", "retina_net")), "duplicates"),
        (dict(train_preset="gpu"), "unknown training preset"),
        (dict(overrides={"seed": 3}), "grid axes"),
        (dict(name="a b"), "name"),
    ],
)
def test_bad_definitions_are_rejected_with_a_clear_message(change, message):
    with pytest.raises(StudyError) as err:
        small(**change).validate()
    assert message in str(err.value)


def test_all_problems_are_listed_at_once():
    with pytest.raises(StudyError) as err:
        small(tasks=("nope",), models=("nada",), n_train=(5000,)).validate()
    text = str(err.value)
    assert "nope" in text and "nada" in text and "5000" in text


def test_hash_is_pinned_and_order_insensitive():
    d = small()
    # Pinned: a change here means every existing study folder would be refused. Bump only on purpose.
    assert d.hash == "079bd6d6246771f0"
    assert small(n_train=(20, 100), seeds=(1, 0)).hash == d.hash
    assert small(seeds=(0, 1, 2)).hash != d.hash
    assert small(overrides={"epochs": 3}).hash != d.hash
    assert small(overrides={"epochs": 3, "lr": 1e-3}).hash == small(overrides={"lr": 1e-3, "epochs": 3}).hash


def test_hash_survives_a_json_round_trip_and_another_process():
    d = small(overrides={"patch_size": (96, 96), "lr": 3e-4})
    again = StudyDefinition.from_dict(__import__("json").loads(__import__("json").dumps(d.to_dict())))
    assert again.hash == d.hash and hash(again) == hash(again)
    code = ("from retina_unet.study import StudyDefinition as S; print(S(name='t', tasks=('donuts_shape',), "
            "models=('retina_net','retina_unet'), n_train=(100,20), seeds=(0,1), train_preset='smoke').hash)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == small().hash


def test_run_hash_ignores_where_a_run_executes():
    cfg = {"model": "retina_unet", "n_train": 20, "seed": 0, "lr": 1e-3}
    assert config_hash(cfg) == "4636b6030676"
    assert config_hash({**cfg, "device": "cuda", "num_threads": 8}) == config_hash(cfg)
    assert config_hash({**cfg, "lr": 1e-4}) != config_hash(cfg)


def test_canonical_json_is_canonical():
    assert canonical_json({"b": (1, 2), "a": 1.5}) == '{"a":1.5,"b":[1,2]}'
    assert stable_hash({"a": 1}) == stable_hash({"a": 1})
    with pytest.raises(ValueError):
        canonical_json({"a": float("nan")})


