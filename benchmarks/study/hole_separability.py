"""How separable are the donut classes at all? Oracle-centre observers on generated toy objects.

For each donuts_shape object not cut by the border, the voxels of the centred hole region (``|p - c|^2
< hole_radius^2``) are read from the image at the object's known centre, and the class is guessed by

- a linear observer: the mean of those voxels below 0.6 (background mean 0.5, object mean 0.7) ->
  class 2; theory for uniform noise: Phi(0.1 sqrt(N) / sqrt(1/12)) with N hole voxels;
- a likelihood rule for the bounded noise: a voxel below 0.2 can only be background (a hole), one at
  or above 1.0 only object; otherwise the guess is class 1.

It bounds what a detector can reach on the class, not on localisation (docs/models.md, "3D
learning"). Usage: ``python benchmarks/study/hole_separability.py [--n 1000] [--seed 1]``.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import norm

import toy_data


def separability(dim: int, n: int, seed: int) -> dict:
    spec = toy_data.task_spec("donuts_shape", dim)
    full = 2 * spec.radii[0] - 1  # box extent of an uncut object (strict disc test)
    r = int(np.ceil(spec.hole_radius))
    grid = np.indices((2 * r + 1,) * dim).reshape(dim, -1).T - r
    offsets = grid[(grid**2).sum(1) < spec.hole_radius**2]
    linear = likelihood = used = 0
    for i in range(n):
        s = toy_data.generate_sample(spec, seed, i)
        for box, label in zip(np.asarray(s.boxes), np.asarray(s.labels), strict=True):
            if not np.all(box[dim:] - box[:dim] == full):
                continue  # cut by the border: the centre is not the box centre
            centre = ((box[:dim] + box[dim:]) / 2 - 0.5).round().astype(int)
            v = s.image[tuple((offsets + centre).T)]
            linear += int((v.mean() < 0.6) == (label == 2))
            guess = 2 if (v < 0.2).any() else 1
            likelihood += int(guess == label)
            used += 1
    k = len(offsets)
    return {
        "dim": dim,
        "hole_pixels": k,
        "objects": used,
        "linear": linear / used,
        "linear_theory": float(norm.cdf(0.1 * np.sqrt(k) / np.sqrt(1 / 12))),
        "likelihood": likelihood / used,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="generated images per dimension")
    ap.add_argument("--seed", type=int, default=1, help="split seed of the generated images")
    args = ap.parse_args()
    print("| dim | hole pixels | uncut objects | linear observer | its theory | likelihood rule |")
    print("|---|---|---|---|---|---|")
    for dim in (2, 3):
        r = separability(dim, args.n, args.seed)
        print(
            f"| {dim}D | {r['hole_pixels']} | {r['objects']} | {r['linear']:.3f} | {r['linear_theory']:.3f} "
            f"| {r['likelihood']:.4f} |"
        )


if __name__ == "__main__":
    main()
