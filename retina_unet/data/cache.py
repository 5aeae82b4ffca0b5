"""The toy-dataset cache: one folder per (task, dims, data seed, pool sizes, task overrides),
generated on first use under a file lock and loaded memory-mapped afterwards."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

DEFAULT_DATA_ROOT = os.environ.get("RETINA_UNET_DATA", "data/cache")


def dataset_key(cfg) -> str:
    """Cache folder name: task, dim, data seed, pool sizes and a hash of the task overrides.

    ``cfg`` is any object with ``task``, ``spatial_dims``, ``data_seed``, ``pool_train``,
    ``pool_val``, ``pool_test`` and ``task_overrides`` (a ``TrainConfig``).
    """
    over = json.dumps(cfg.task_overrides, sort_keys=True, default=str)
    h = hashlib.sha256(over.encode()).hexdigest()[:8] if cfg.task_overrides else "default"
    return (
        f"{cfg.task}_{cfg.spatial_dims}d_seed{cfg.data_seed}_"
        f"n{cfg.pool_train}-{cfg.pool_val}-{cfg.pool_test}_{h}"
    )


def task_num_classes(cfg) -> int:
    """Foreground classes of ``cfg``'s toy task (one object radius per class in its task spec)."""
    import toy_data

    return len(toy_data.task_spec(cfg.task, dim=cfg.spatial_dims, **cfg.task_overrides).radii)


def ensure_dataset(
    cfg,
    data_root: str | Path = DEFAULT_DATA_ROOT,
    progress: bool = False,
    splits: tuple[str, ...] | None = None,
):
    """Load the toy dataset of ``cfg`` from the cache, generating it first when missing.

    ``splits`` (e.g. ``("test",)``) opens only those splits: readers of the test split do not fail
    on a damaged train file. A damaged cache raises a ``toy_data.DatasetError`` that says to delete
    the cache folder (the next run regenerates it).
    """
    import toy_data

    root = Path(data_root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / dataset_key(cfg)
    with open(root / ".lock", "w") as lock:  # one generating process at a time; others wait then load
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (path / "manifest.json").is_file():
                spec = toy_data.task_spec(cfg.task, dim=cfg.spatial_dims, **cfg.task_overrides)
                toy_data.write_dataset(
                    spec,
                    path,
                    seed=cfg.data_seed,
                    n_train=cfg.pool_train,
                    n_val=cfg.pool_val,
                    n_test=cfg.pool_test,
                    progress=progress,
                )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        return toy_data.load_dataset(path, verify=False, splits=splits)
    except toy_data.DatasetError as e:
        raise toy_data.DatasetError(
            f"the dataset cache {path} is damaged: {e}. Delete {path} and rerun: it is regenerated"
        ) from None
