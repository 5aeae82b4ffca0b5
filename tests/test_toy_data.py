"""toy_data generation: task semantics, boxes vs masks, determinism, nesting, statistics, validation."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scipy import ndimage

import toy_data
from toy_data import TASKS, generate_sample, generate_split, task_spec
from toy_data.reference import generate_sample_loop
from toy_data.spec import grid_capacity


def small_spec(task: str, dim: int, **ov):
    """A small, fast spec of the task (same semantics as the defaults)."""
    if dim == 2:
        base = dict(size=64, margin=4, radii=(8.0, 8.0), hole_radius=3.0)
    else:
        base = dict(size=24, margin=3, radii=(5.0, 5.0), hole_radius=2.0)
    if task == "circles_scale":
        base.update(radii=(base["radii"][0] - 1, base["radii"][0]), hole_radius=0.0)
    base.update(ov)
    return task_spec(task, dim, **base)


def assert_same(a, b):
    for key in ("image", "mask", "labels", "boxes"):
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype == y.dtype and x.shape == y.shape, key
        assert x.tobytes() == y.tobytes(), key


# --- defaults --------------------------------------------------------------------------------------


def test_paper_defaults():
    for name in TASKS:
        s = task_spec(name)
        assert s.shape == (320, 320) and s.margin == 10 and s.contrast == 0.2 and s.noise
        assert s.objects_per_image == 1
    assert task_spec("circles_scale").radii == (19.0, 20.0)
    assert task_spec("donuts_shape").radii == (20.0, 20.0) and task_spec("donuts_shape").hole_radius == 4.0
    assert task_spec("donuts_shape").mask_has_hole and not task_spec("donuts_pattern").mask_has_hole
    s3 = task_spec("donuts_pattern", 3)
    assert s3.shape == (64, 64, 64) and s3.radii == (10.0, 10.0) and s3.hole_radius == 2.0 and s3.margin == 5
    assert task_spec("circles_scale", 3).radii == (9.0, 10.0)


def test_spec_round_trip_and_hashable():
    s = task_spec("donuts_shape", 3, size=(40, 48, 56), objects_per_image=2)
    assert toy_data.TaskSpec.from_dict(s.to_dict()) == s
    assert hash(s) == hash(toy_data.TaskSpec.from_dict(s.to_dict()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.margin = 3


# --- the vectorised generator equals the per-pixel loop ------------------------------------------------


@given(
    task=st.sampled_from(TASKS),
    dim=st.sampled_from([2, 3]),
    k=st.integers(1, 3),
    noise=st.booleans(),
    seed=st.integers(0, 2**63),
    index=st.integers(0, 10**6),
    margin=st.integers(0, 6),
)
def test_matches_pixel_loop(task, dim, k, noise, seed, index, margin):
    size = 64 if dim == 2 else 28
    spec = small_spec(task, dim, objects_per_image=k, noise=noise, margin=margin, size=size)
    assert_same(generate_sample(spec, seed, index), generate_sample_loop(spec, seed, index))


def test_matches_pixel_loop_paper_size():
    for name in TASKS:
        spec = task_spec(name)
        assert_same(generate_sample(spec, 3, 11), generate_sample_loop(spec, 3, 11))


# --- masks and boxes ------------------------------------------------------------------------------


@given(
    task=st.sampled_from(TASKS),
    dim=st.sampled_from([2, 3]),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**32),
    index=st.integers(0, 1000),
)
def test_boxes_equal_mask_extent(task, dim, k, seed, index):
    spec = small_spec(task, dim, objects_per_image=k, size=96 if dim == 2 else 40)
    s = generate_sample(spec, seed, index)
    assert s.labels.shape == (k,) and s.boxes.shape == (k, 2 * dim)
    assert set(np.unique(s.mask)) <= {0, 1, 2}
    # Objects never touch (gap 2), so each is one connected component of the mask.
    comps, n = ndimage.label(s.mask > 0, structure=np.ones((3,) * dim))
    assert n == k
    found = []
    for c in range(1, n + 1):
        where = np.argwhere(comps == c)
        box = np.concatenate([where.min(0), where.max(0) + 1]).astype(np.float32)
        (cls,) = np.unique(s.mask[comps == c])
        found.append((tuple(box), int(cls)))
    assert sorted(found) == sorted((tuple(b), int(lab)) for b, lab in zip(s.boxes, s.labels, strict=True))


def test_clipped_objects_have_clipped_boxes():
    spec = task_spec("circles_scale", margin=0)
    boxes = generate_split(spec, 1, 200)["boxes"].reshape(-1, 4)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 320).all()
    extent = boxes[:, 2:] - boxes[:, :2]
    assert (boxes[:, :2] == 0).any() and (boxes[:, 2:] == 320).any()  # some objects cut by the border
    assert extent.min() >= 19 and extent.min() < 37  # a clipped box keeps at least half the object
    assert ((extent == 37) | (extent == 39)).any()


# --- task semantics -------------------------------------------------------------------------------


def _fully_visible(name, dim):
    """No noise, centres far enough from the border that every object is fully visible."""
    r = task_spec(name, dim).radii[1]
    return task_spec(name, dim, noise=False, margin=int(r))


def _by_class(spec, n=40):
    out = {}
    for i in range(n):
        s = generate_sample(spec, 5, i)
        out.setdefault(int(s.labels[0]), s)
    assert set(out) == {1, 2}
    return out


@pytest.mark.parametrize(
    "name,dim,mask_px,lit_px",
    [
        # class: (mask pixels, pixels with +contrast)
        ("donuts_shape", 2, {1: 1245, 2: 1245 - 45}, {1: 1245, 2: 1245 - 45}),
        ("donuts_pattern", 2, {1: 1245, 2: 1245}, {1: 1245, 2: 1245 - 45}),
        ("circles_scale", 2, {1: 1125, 2: 1245}, {1: 1125, 2: 1245}),
        ("donuts_shape", 3, {1: 4139, 2: 4139 - 27}, {1: 4139, 2: 4139 - 27}),
        ("donuts_pattern", 3, {1: 4139, 2: 4139}, {1: 4139, 2: 4139 - 27}),
        ("circles_scale", 3, {1: 2969, 2: 4139}, {1: 2969, 2: 4139}),
    ],
)
def test_pixel_counts_per_class(name, dim, mask_px, lit_px):
    spec = _fully_visible(name, dim)
    for cls, s in _by_class(spec).items():
        assert (s.mask == cls).sum() == mask_px[cls] and (s.mask > 0).sum() == mask_px[cls]
        assert (s.image == np.float32(0.2)).sum() == lit_px[cls]
        assert ((s.image == 0) | (s.image == np.float32(0.2))).all()
        # the box of a fully visible object is its full extent: 2 * ceil(r) - 1 pixels per axis
        r = spec.radii[cls - 1]
        assert ((s.boxes[0, dim:] - s.boxes[0, :dim]) == 2 * np.ceil(r) - 1).all()


@pytest.mark.parametrize("dim", [2, 3])
def test_hole_is_background(dim):
    """Class-2 donuts: the centred hole has no +contrast (image) and is cut from the mask only in
    donuts_shape; noise on, the hole pixels equal the same sample's noise-free image plus background."""
    for name in ("donuts_shape", "donuts_pattern"):
        spec = _fully_visible(name, dim)
        noisy = toy_data.TaskSpec.from_dict({**spec.to_dict(), "noise": True})
        for i in range(30):
            clean, s = generate_sample(spec, 9, i), generate_sample(noisy, 9, i)
            if s.labels[0] != 2:
                continue
            centre = tuple(int(c) for c in (s.boxes[0, :dim] + s.boxes[0, dim:] - 1) / 2)
            assert clean.image[centre] == 0 and s.image[centre] < 1  # the hole: background only
            assert (s.mask[centre] == 0) == (name == "donuts_shape")
            lit = clean.image > 0
            assert (s.image[lit] >= 0.2).all() and (s.image[~lit] < 1).all()
            break
        else:
            pytest.fail("no class-2 sample")


# --- determinism and nesting ----------------------------------------------------------------------


def _digest(arrays):
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode() + np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def test_workers_give_identical_bytes():
    spec = task_spec("donuts_shape", size=160)  # 80 per chunk -> several chunks
    one = generate_split(spec, 42, 260, workers=1)
    two = generate_split(spec, 42, 260, workers=2)
    assert _digest(one) == _digest(two)


def test_identical_across_processes():
    spec = small_spec("donuts_pattern", 3)
    code = (
        "import hashlib, numpy as np, toy_data as t;"
        f"a = t.generate_split(t.TaskSpec.from_dict({spec.to_dict()!r}), 7, 12);"
        "h = hashlib.sha256();"
        "[h.update(k.encode() + np.ascontiguousarray(a[k]).tobytes()) for k in sorted(a)];"
        "print(h.hexdigest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == _digest(generate_split(spec, 7, 12))


def test_nested_and_index_pure():
    spec = small_spec("circles_scale", 2)
    big, small = generate_split(spec, 3, 30), generate_split(spec, 3, 10)
    for key in big:
        assert big[key][:10].tobytes() == small[key].tobytes()
    s = generate_sample(spec, 3, 17)
    assert (
        s.image.tobytes() == big["images"][17].tobytes() and s.boxes.tobytes() == big["boxes"][17].tobytes()
    )
    assert generate_sample(spec, 4, 17).image.tobytes() != s.image.tobytes()


def test_split_seeds_independent():
    seeds = toy_data.split_seeds(0)
    assert set(seeds) == {"train", "val", "test"} and len(set(seeds.values())) == 3
    assert toy_data.split_seeds(0) == seeds and toy_data.split_seeds(1) != seeds


# --- statistics -----------------------------------------------------------------------------------


def test_class_balance_within_binomial_bounds():
    spec = small_spec("donuts_shape", 2, size=24, radii=(4.0, 4.0), hole_radius=1.0, margin=4)
    n = 4000
    labels = generate_split(spec, 11, n)["labels"].ravel()
    ones = int((labels == 1).sum())
    assert set(np.unique(labels)) == {1, 2}
    assert abs(ones - n / 2) <= 4 * np.sqrt(n * 0.25), ones  # 4 sigma


def test_object_minus_background_mean():
    spec = task_spec("circles_scale")
    a = generate_split(spec, 2, 40)
    fg = a["masks"] > 0
    diff = a["images"][fg].mean() - a["images"][~fg].mean()
    assert abs(diff - 0.2) < 0.01, diff
    assert abs(a["images"][~fg].mean() - 0.5) < 0.01
    assert 0 <= a["images"].min() and a["images"].max() < 1.2


# --- many objects ---------------------------------------------------------------------------------


def test_dense_placement_fallback_never_overlaps():
    spec = small_spec("circles_scale", 2, size=64, margin=8)
    spec = toy_data.TaskSpec.from_dict({**spec.to_dict(), "objects_per_image": grid_capacity(spec)})
    for i in range(5):
        s = generate_sample(spec, 0, i)
        _, n = ndimage.label(s.mask > 0, structure=np.ones((3, 3)))
        assert n == spec.objects_per_image


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,dim,overrides,message",
    [
        ("donuts_circle", 2, {}, "unknown task 'donuts_circle'"),
        ("donuts_shape", 4, {}, "dim must be 2 or 3"),
        ("donuts_shape", 2, {"size": 0}, "image sizes must be positive integers"),
        ("donuts_shape", 2, {"size": (320, -5)}, "image sizes must be positive integers"),
        ("donuts_shape", 2, {"shape": (320,)}, "2 .2D. or 3 .3D. axis sizes"),
        ("circles_scale", 2, {"radii": (0, 20)}, "radii must be two positive numbers"),
        ("circles_scale", 2, {"radii": (20, 20)}, "radii must differ"),
        ("circles_scale", 2, {"hole_radius": 3}, "have no hole"),
        ("donuts_pattern", 2, {"radii": (20, 30)}, "same disc for both classes"),
        ("donuts_shape", 2, {"hole_radius": 20}, "0 < hole_radius < radius"),
        ("donuts_shape", 2, {"hole_radius": 0}, "0 < hole_radius < radius"),
        ("donuts_shape", 2, {"radii": (5.0, 5.0), "hole_radius": 4.9}, "no lattice point between"),
        ("donuts_shape", 2, {"contrast": 0}, "contrast must be a positive number"),
        ("donuts_shape", 2, {"margin": -1}, "margin must be an integer >= 0"),
        ("donuts_shape", 2, {"margin": 160}, "no room for object centres on axis 0"),
        ("donuts_shape", 2, {"size": 30}, "spans 39 pixels, more than axis 0's size 30"),
        ("donuts_shape", 3, {"size": (64, 64, 12)}, "more than axis 2's size 12"),
        ("donuts_shape", 2, {"objects_per_image": 0}, "objects_per_image must be an integer >= 1"),
        ("donuts_shape", 2, {"objects_per_image": 65}, "cannot be placed without overlap"),
        ("donuts_shape", 2, {"noise": "yes"}, "noise must be True or False"),
        ("donuts_shape", 2, {"colour": 3}, "unknown override"),
    ],
)
def test_invalid_specs_rejected(name, dim, overrides, message):
    with pytest.raises(ValueError, match=message):
        task_spec(name, dim, **overrides)


def _largest_lattice_norm_below(r: float, dim: int) -> float:
    """max |p| over integer offsets p with |p| < r (r > 1): a hole up to this leaves ring pixels."""
    n = math.ceil(r)
    return max(
        math.sqrt(sq)
        for sq in (sum(c * c for c in p) for p in itertools.product(range(n), repeat=dim))
        if sq < r * r
    )


@st.composite
def valid_specs(draw):
    """Specs that validation must accept, drawn directly (nothing is rejected): small images, any
    task and dim, one or several objects, clipping at the border (margin < radius), any hole that
    leaves ring pixels."""
    task, dim = draw(st.sampled_from(TASKS)), draw(st.sampled_from([2, 3]))
    r_max = 9.0 if dim == 2 else 5.0
    if task == "circles_scale":
        r1 = draw(st.floats(1.0, r_max))
        r2 = r1 + draw(st.floats(0.25, 4.0))
        radii, hole = draw(st.sampled_from([(r1, r2), (r2, r1)])), 0.0
    else:
        r = draw(st.floats(1.5, r_max))
        radii = (r, r)
        # below the lattice norm (not up to it: sqrt(2)**2 rounds to 2.0000000000000004 > 2)
        hole = draw(st.floats(0.05, 0.99)) * _largest_lattice_norm_below(r, dim)
    margin = draw(st.integers(0, 6))
    extent = 2 * math.ceil(max(radii)) - 1
    shape = tuple(max(extent, 2 * margin + 1) + draw(st.integers(0, 16)) for _ in range(dim))
    spec = task_spec(task, dim, shape=shape, radii=radii, hole_radius=hole, margin=margin)
    k = draw(st.integers(1, min(6, grid_capacity(spec))))
    return dataclasses.replace(spec, objects_per_image=k)


@given(spec=valid_specs(), seed=st.integers(0, 2**31 - 1), index=st.integers(0, 1000))
@example(spec=toy_data.TaskSpec(task="donuts_shape", shape=(15, 20), radii=(7.5, 7.5), hole_radius=3.640054944640259,
                                margin=0, objects_per_image=2), seed=401, index=1000)  # boxes overlap, discs apart
def test_every_valid_spec_generates_valid_samples(spec, seed, index):
    s = generate_sample(spec, seed, index)
    dim, k = spec.dim, spec.objects_per_image
    assert s.image.shape == spec.shape and s.mask.shape == spec.shape
    assert s.labels.shape == (k,) and set(s.labels.tolist()) <= {1, 2}
    assert s.boxes.shape == (k, 2 * dim)
    lo, hi = s.boxes[:, :dim], s.boxes[:, dim:]
    assert (lo >= 0).all() and (hi <= np.array(spec.shape)).all() and (hi > lo).all()
    assert set(np.unique(s.mask[s.mask > 0]).tolist()) == set(s.labels.tolist())
    # every mask pixel lies in a box of its own class
    covered = np.zeros(spec.shape, bool)
    for box, label in zip(s.boxes.astype(int), s.labels, strict=True):
        sl = tuple(slice(a, b) for a, b in zip(box[:dim], box[dim:], strict=True))
        covered[sl] |= s.mask[sl] == label
    assert covered[s.mask > 0].all()
    # objects (K > 1) never touch: every 8-connected piece of the mask lies inside one object's box (the
    # boxes of two discs placed diagonally may overlap while the discs stay apart, so pixel counts per
    # box need not add up; a thin ring may fall apart into several pieces, each inside its box)
    comps, _ = ndimage.label(s.mask > 0, structure=np.ones((3,) * dim))
    for piece in ndimage.find_objects(comps):
        lo_p, hi_p = np.array([sl.start for sl in piece]), np.array([sl.stop for sl in piece])
        assert any((box[:dim] <= lo_p).all() and (box[dim:] >= hi_p).all() for box in s.boxes), piece


def test_bad_seed_rejected():
    with pytest.raises(ValueError, match="must be >= 0"):
        generate_sample(task_spec("donuts_shape"), -1, 0)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        generate_split(task_spec("donuts_shape"), 0, 2, workers=0)


# --- the palette, the spec's derived numbers, chunked and parallel generation -----------------------


def test_palette_colours_and_legends():
    from toy_data.palette import class_colour, legend

    assert [class_colour(c) for c in (1, 2, 3, 4, 5, 0)] == ["cyan", "magenta", "yellow", "tomato", "white", "white"]
    assert class_colour(np.int64(2)) == "magenta" and class_colour(2.0) == "magenta"
    assert legend() == ("cyan: class 1, magenta: class 2; solid: ground truth, dashed: predictions (class, score); "
                        "orange: segmentation outline")
    assert legend(predictions=False) == "boxes: cyan: class 1, magenta: class 2; orange: mask outline"


def test_spec_derived_numbers():
    # background [0, 1) plus contrast 0.2 -> [0, 1.2]; no noise: [0, 0.2]
    assert task_spec("donuts_shape").intensity_range == (0.0, 1.2)
    assert task_spec("donuts_shape", noise=False, contrast=0.5).intensity_range == (0.0, 0.5)
    # 2 x the larger radius (20) + gap 2 = 42; 3D: 2 x 10 + 3 = 23
    assert task_spec("circles_scale").min_centre_distance == 42.0
    assert task_spec("circles_scale", 3, gap=3).min_centre_distance == 23.0
    # a 64^2 image, margin 4: centres 4..59 (56 positions, span 55); step ceil(2 * 8 + 2) = 18 -> 55 // 18 + 1 = 4
    # per axis, 16 in all; with gap 2.5 the step is 19: 55 // 19 + 1 = 3 -> 9
    s = small_spec("donuts_shape", 2)
    assert grid_capacity(s) == 16 and grid_capacity(dataclasses.replace(s, gap=2.5)) == 9
    assert s.to_dict()["noise"] is True and s.to_dict()["shape"] == [64, 64] and s.to_dict()["radii"] == [8.0, 8.0]


def test_with_overrides_and_from_dict_validate():
    from toy_data.spec import with_overrides

    s = small_spec("donuts_shape", 2)
    t = with_overrides(s, margin=6, objects_per_image=2)
    assert (t.margin, t.objects_per_image, t.shape) == (6, 2, (64, 64))
    with pytest.raises(ValueError, match="margin must be an integer >= 0"):
        with_overrides(s, margin=-2)
    with pytest.raises(ValueError, match=r"unknown task spec field\(s\) \['colour'\]"):
        toy_data.TaskSpec.from_dict({**s.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="give either size= or shape=, not both"):
        task_spec("donuts_shape", size=64, shape=(64, 64))
    with pytest.raises(ValueError, match="task='circles_scale' contradicts name='donuts_shape'"):
        task_spec("donuts_shape", task="circles_scale")
    assert task_spec("donuts_shape", task="donuts_shape", size=(48, 56)).shape == (48, 56)


@pytest.mark.parametrize("cpus, expected", [(None, 1), (1, 1), (2, 1), (3, 2), (5, 4), (64, 4)])
def test_automatic_workers_one_per_cpu_beyond_the_first_at_most_four(monkeypatch, cpus, expected):
    from toy_data import generate as gen

    monkeypatch.setattr(gen.os, "cpu_count", lambda: cpus)
    assert gen.resolve_workers(None) == expected
    assert gen.resolve_workers(3) == 3
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError, match="workers must be an integer >= 1"):
            gen.resolve_workers(bad)


def test_default_chunk_is_about_8_mib_of_images():
    from toy_data.generate import default_chunk

    # 8 MiB / (4 bytes x 320^2) = 20.48 -> 20; 64^3: 8 MiB / 1 MiB = 8; tiny images: at most 256;
    # images over 8 MiB: at least 1
    assert default_chunk(task_spec("donuts_shape")) == 20
    assert default_chunk(task_spec("donuts_shape", 3)) == 8
    assert default_chunk(small_spec("donuts_shape", 2, size=16, margin=0, radii=(4.0, 4.0), hole_radius=1.0)) == 256
    assert default_chunk(task_spec("donuts_shape", size=2048)) == 1


@pytest.mark.parametrize("workers, pooled", [(1, False), (2, False), (3, True)])
def test_iter_chunks_are_the_split_in_order(workers, pooled):
    from concurrent.futures import ThreadPoolExecutor

    from toy_data.generate import iter_chunks

    spec = small_spec("donuts_pattern", 2, size=24, margin=4, radii=(4.0, 4.0), hole_radius=1.0)
    whole = generate_split(spec, 5, 23)
    pool = ThreadPoolExecutor(2) if pooled else None
    try:
        chunks = list(iter_chunks(spec, 5, 23, workers=workers, chunk=5, pool=pool))
    finally:
        if pool:
            pool.shutdown()
    assert [len(c["labels"]) for c in chunks] == [5, 5, 5, 5, 3]
    for key in whole:
        assert np.concatenate([c[key] for c in chunks]).tobytes() == whole[key].tobytes(), key
    assert list(iter_chunks(spec, 5, 0, workers=workers)) == []
    with pytest.raises(ValueError, match="n must be >= 0, got -1"):
        list(iter_chunks(spec, 5, -1))


class _SpyPool:
    """A thread pool that records the first sample of every chunk submitted to it, and its shutdown."""

    def __init__(self, workers):
        from concurrent.futures import ThreadPoolExecutor

        self._pool, self._max_workers, self.submitted, self.shut = ThreadPoolExecutor(workers), workers, [], False

    def submit(self, fn, spec, seed, start, stop):
        self.submitted.append(start)
        return self._pool.submit(fn, spec, seed, start, stop)

    def shutdown(self, **kwargs):
        self.shut = True
        self._pool.shutdown(**kwargs)


@pytest.mark.parametrize("workers, given_pool, window", [(2, None, 4), (1, 3, 6), (3, 2, 6)])
def test_iter_chunks_keeps_at_most_two_chunks_per_worker_in_flight(monkeypatch, workers, given_pool, window):
    # the window is 2 x the larger of `workers` and the pool's threads: that many chunks are
    # submitted before the first is handed out, then one more per chunk handed out
    from toy_data import generate as gen

    spec = small_spec("circles_scale", 2, size=24, margin=4, radii=(3.0, 4.0))
    own = _SpyPool(workers)
    monkeypatch.setattr(gen, "make_pool", lambda w: own if w == workers else pytest.fail(f"pool of {w}"))
    pool = _SpyPool(given_pool) if given_pool else None
    spy = pool or own
    it = gen.iter_chunks(spec, 1, 20, workers=workers, chunk=2, pool=pool)
    first = next(it)
    assert spy.submitted == list(range(0, 2 * window + 2, 2)) and first["labels"].shape == (2, 1)
    rest = list(it)
    assert spy.submitted == list(range(0, 20, 2)) and len(rest) == 9
    assert np.concatenate([first["boxes"], *(c["boxes"] for c in rest)]).tobytes() == (
        generate_split(spec, 1, 20)["boxes"].tobytes())
    # a pool of its own is shut down at the end; a given one is left to its owner
    assert spy.shut == (pool is None)
    if pool:
        pool.shutdown()


# --- validation in detail, the pool decisions, pinned bytes --------------------------------------------


def test_spec_fields_are_stored_as_tuples_and_floats():
    s = toy_data.TaskSpec(task="donuts_shape", shape=[64, 64], radii=[8, 8], hole_radius=3, contrast=1, margin=4,
                          gap=3)
    assert s.shape == (64, 64) and s.radii == (8.0, 8.0) and isinstance(s.radii, tuple)
    assert [type(v) for v in (*s.radii, s.hole_radius, s.contrast, s.gap)] == [float] * 5
    for field, value, message in (("shape", 64, "shape must list 2"), ("radii", 8, "radii must be two positive"),
                                  ("radii", (3, 4, 5), "radii must be two positive"),
                                  ("shape", (64.5, 64), "image sizes must be positive integers"),
                                  ("margin", True, "margin must be an integer >= 0"),
                                  ("contrast", True, "contrast must be a positive number"),
                                  ("contrast", float("inf"), "contrast must be a positive number"),
                                  ("gap", -1, "gap must be a number >= 0, got -1$"),
                                  ("hole_radius", -1, "hole_radius must be a number >= 0, got -1$")):
        with pytest.raises(ValueError, match=r"^invalid donuts_shape task spec: " + message):
            toy_data.TaskSpec.from_dict({**s.to_dict(), field: value})
    with pytest.raises(ValueError, match=r"^unknown task 'x': expected one of donuts_shape, donuts_pattern, "
                       r"circles_scale$"):
        toy_data.TaskSpec.from_dict({**s.to_dict(), "task": "x"})
    with pytest.raises(ValueError, match=r"^unknown task 'x': expected one of donuts_shape, donuts_pattern, "
                       r"circles_scale$"):
        task_spec("x")
    with pytest.raises(ValueError, match=r"^give either size= or shape=, not both$"):
        task_spec("donuts_shape", size=64, shape=(64, 64))
    with pytest.raises(ValueError, match=r"^unknown override\(s\) \['colour'\]; overridable fields: \['contrast', "
                       r"'gap', 'hole_radius', 'margin', 'noise', 'objects_per_image', 'radii', 'shape'\]$"):
        task_spec("donuts_shape", colour=1)


def test_validation_limits_by_hand():
    # accepted at the limits: gap 0 and 0.5, radii below 1, a 1-pixel-wide image axis, one centre position
    assert task_spec("donuts_shape", gap=0).gap == 0.0 and task_spec("donuts_shape", gap=0.5).gap == 0.5
    assert task_spec("circles_scale", shape=(1, 8), radii=(0.5, 1.0), margin=0).shape == (1, 8)
    s = task_spec("circles_scale", size=9, radii=(3.0, 4.0), margin=4)  # 9 - 2 x 4 = 1 centre position
    assert (generate_sample(s, 0, 0).boxes == [1, 1, 8, 8]).all()
    # rings: 2D offsets' squared norms near the origin are 0, 1, 2, 4, 5, 8, ...; 3D adds 3, 6, ...
    assert task_spec("donuts_shape", radii=(3.0, 3.0), hole_radius=2.5).hole_radius == 2.5  # 8 in [6.25, 9)
    assert task_spec("donuts_shape", radii=(2.1, 2.1), hole_radius=2.0).hole_radius == 2.0  # 4 in [4, 4.41)
    assert task_spec("donuts_shape", 3, radii=(2.0, 2.0), hole_radius=1.6).hole_radius == 1.6  # 3 in [2.56, 4)
    with pytest.raises(ValueError, match=r"^invalid donuts_shape task spec: a disc of radius 2.0 with a hole of "
                       r"radius 1.5 has no pixels left \(no lattice point between the two radii\)$"):
        task_spec("donuts_shape", radii=(2.0, 2.0), hole_radius=1.5)  # 2D: nothing in [2.25, 4); 3D would have 3
    # capacity: 24 - 2 x 4 - 1 = 15 positions span, step 18 -> 1 per axis; 45: span 36 -> 3 per axis
    small = task_spec("donuts_shape", size=24, margin=4, radii=(8.0, 8.0), hole_radius=3.0)
    assert grid_capacity(small) == 1
    assert grid_capacity(task_spec("donuts_shape", size=45, margin=4, radii=(8.0, 8.0), hole_radius=3.0)) == 9
    with pytest.raises(ValueError, match=r"within \(16, 16\) allowed centre positions, which guarantees room for "
                       r"at most 1$"):
        dataclasses.replace(small, objects_per_image=2)


@pytest.mark.parametrize("hole", [0.5, 1.0])
def test_a_hole_below_one_pixel_is_the_centre_pixel(hole):
    spec = task_spec("donuts_shape", size=40, margin=8, radii=(8.0, 8.0), hole_radius=hole, noise=False)
    for i in range(20):
        s = generate_sample(spec, 1, i)
        assert_same(s, generate_sample_loop(spec, 1, i))
        if s.labels[0] == 2:
            centre = tuple(int(v) for v in (s.boxes[0, :2] + s.boxes[0, 2:] - 1) / 2)
            disc = sum(x * x + y * y < 64 for x in range(-8, 9) for y in range(-8, 9))  # lattice points, radius 8
            assert s.mask[centre] == 0 and s.image[centre] == 0 and (s.mask == 2).sum() == disc - 1
            return
    pytest.fail("no class-2 sample")


def test_generated_bytes_are_pinned_for_this_generator_version():
    """Generator 1.0's bytes (a change must bump GENERATOR_VERSION): one object, three objects, and a
    dense layout that takes the grid fallback (these digests are recorded, not derived)."""
    assert toy_data.GENERATOR_VERSION == "1.0"
    one = task_spec("donuts_shape", size=64, margin=4, radii=(8.0, 8.0), hole_radius=3.0)
    three = task_spec("circles_scale", size=64, margin=4, radii=(7.0, 8.0), objects_per_image=3)
    dense = task_spec("circles_scale", size=64, margin=8, radii=(7.0, 8.0))
    dense = dataclasses.replace(dense, objects_per_image=grid_capacity(dense))
    assert [_digest(generate_split(s, 7, 4))[:16] for s in (one, three, dense)] == [
        "bdab84583f5a4077", "e9a3a36cc07efae9", "f375f2d7702cb328"]
    a = generate_split(one, 7, 2)
    assert (a["images"].dtype, a["masks"].dtype, a["labels"].dtype, a["boxes"].dtype) == (
        np.float32, np.uint8, np.int64, np.float32)


def test_when_a_thread_pool_is_used(monkeypatch):
    # chunks of 4 samples: a pool of `workers` threads only with workers > 1 and more than one chunk
    from toy_data import generate as gen

    spec = task_spec("circles_scale", size=24, margin=4, radii=(3.0, 4.0))
    monkeypatch.setattr(gen, "default_chunk", lambda s: 4)
    made, real = [], gen.make_pool
    monkeypatch.setattr(gen, "make_pool", lambda w: made.append(w) or real(w))
    whole = gen.generate_range(spec, 3, 0, 9)
    for n, workers, pooled in ((9, 1, False), (4, 2, False), (8, 2, True), (9, 3, True)):
        made.clear()
        out = gen.generate_split(spec, 3, n, workers=workers)
        assert made == ([workers] if pooled else []) and out["boxes"].tobytes() == whole["boxes"][:n].tobytes()
        made.clear()
        chunks = list(gen.iter_chunks(spec, 3, n, workers=workers, chunk=4))
        assert made == ([workers] if pooled else []) and len(chunks) == (n + 3) // 4
    made.clear()
    gen.generate_split(spec, 3, 9)
    list(gen.iter_chunks(spec, 3, 9, chunk=4))
    assert made == []  # one thread by default


def test_make_pool_threads_and_iter_chunks_shutdown(monkeypatch):
    import threading

    from toy_data import generate as gen

    pool = gen.make_pool(3)
    assert pool._max_workers == 3 and pool.submit(lambda: threading.current_thread().name).result().startswith(
        "toy_data_")
    pool.shutdown()
    # a pool without `_max_workers`: the window falls back on `workers`
    spec = task_spec("circles_scale", size=24, margin=4, radii=(3.0, 4.0))
    inner = gen.make_pool(2)

    class Bare:
        def submit(self, *a):
            return inner.submit(*a)

    chunks = list(gen.iter_chunks(spec, 3, 9, workers=2, chunk=4, pool=Bare()))
    assert [len(c["labels"]) for c in chunks] == [4, 4, 1]
    inner.shutdown()
    # its own pool is shut down cancelling what is still queued when the consumer stops early
    calls = []
    own = _SpyPool(2)
    monkeypatch.setattr(own, "shutdown", lambda **kw: calls.append(kw) or own._pool.shutdown(**kw))
    monkeypatch.setattr(gen, "make_pool", lambda w: own)
    it = gen.iter_chunks(spec, 3, 40, workers=2, chunk=2)
    next(it)
    it.close()
    assert calls == [{"cancel_futures": True}]



@pytest.mark.parametrize("dim", [2, 3])
def test_shape_and_pattern_share_images_and_differ_in_masks(dim):
    """docs/conventions.md: the two donut tasks are one image set with two mask rules, so a model that
    reads no mask gets identical results on both (an identical study row is the design, not a bug)."""
    for index in range(6):
        shape = toy_data.generate_sample(toy_data.task_spec("donuts_shape", dim), 0, index)
        pattern = toy_data.generate_sample(toy_data.task_spec("donuts_pattern", dim), 0, index)
        np.testing.assert_array_equal(shape.image, pattern.image)
        np.testing.assert_array_equal(shape.boxes, pattern.boxes)
        np.testing.assert_array_equal(shape.labels, pattern.labels)
        donut = np.asarray(shape.labels) == 2
        if donut.any():  # the hole is cut out of the shape mask only
            assert (np.asarray(shape.mask) > 0).sum() < (np.asarray(pattern.mask) > 0).sum()
        else:
            np.testing.assert_array_equal(np.asarray(shape.mask) > 0, np.asarray(pattern.mask) > 0)


def test_random_placement_accepts_a_candidate_exactly_the_minimum_distance_away():
    """Random sequential placement keeps a candidate whose distance to every placed centre is >= the
    minimum: exactly 42 px (2 x radius 20 + gap 2) apart is allowed, 41.9 would not be. A stub
    generator hands out the candidates (100, 100), (100, 141) (41 px: rejected), (100, 142) (42 px:
    kept), so the result is the first and the third, not the grid fallback."""
    from toy_data.generate import _place_centres

    spec = toy_data.task_spec("donuts_shape", 2, objects_per_image=2)
    assert spec.min_centre_distance == 42.0

    class Candidates:
        def integers(self, lo, hi, size):
            out = np.zeros(size, dtype=np.int64)
            out[:3] = [(100, 100), (100, 141), (100, 142)]
            out[3:] = (100, 100)  # too close to the first: never kept
            return out

    np.testing.assert_array_equal(_place_centres(spec, Candidates()), [(100, 100), (100, 142)])
