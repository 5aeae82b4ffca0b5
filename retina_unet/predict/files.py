"""Atomic outputs: a file is written under a temporary name and renamed; a folder is filled as a
hidden temporary sibling and renamed into place, so readers never see half of either."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename (the file
    gets the usual permissions, not the temporary file's 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, obj) -> Path:
    """JSON (indent 1, NaN-free by the caller's choice of values) via :func:`write_bytes_atomic`."""
    return write_bytes_atomic(path, (json.dumps(obj, indent=1, default=str) + "\n").encode())


def check_output_dir(out: str | Path, overwrite: bool, arg: str = "--out") -> Path:
    """Refuse an existing non-empty ``out`` unless ``overwrite``; a file there is always an error."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{arg}: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{arg}: {out} already exists and is not empty; pass --overwrite to replace it")
    return out


@contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False, arg: str = "--out") -> Iterator[Path]:
    """Yield an empty temporary folder next to ``out``; on success it replaces ``out``.

    On any error the temporary folder is removed and ``out`` is left as it was.
    """
    out = check_output_dir(out, overwrite, arg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
