"""Atomic outputs, one implementation for the whole package.

A file is written under a hidden temporary name in its target folder, flushed to disk and renamed
over the target, so a reader (or a sweep resumed after a kill) sees the old file or the whole new
one, never half of either. A folder is filled as a hidden temporary sibling and renamed into place.
Temporary files get the ordinary permissions (``0666 & ~umask``), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # makes the rename durable; not supported everywhere
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fh)`` on a binary temp file next to ``path``, then rename it to ``path``.

    On any error (or KeyboardInterrupt) the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(
    path: str | Path, obj: Any, *, indent: int = 1, sort_keys: bool = False, default: Callable = str
) -> Path:
    """Write ``obj`` as JSON (a trailing newline; NaN-free by the caller's choice of values) atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default) + "\n"
    return write_text_atomic(path, text)


def csv_text(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """CSV text of ``rows`` (header = ``columns`` or the first row's keys; missing cells empty)."""
    cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", restval="", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_csv_atomic(path: str | Path, rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as CSV (see :func:`csv_text`) to ``path`` atomically."""
    return write_text_atomic(path, csv_text(rows, columns))


def save_figure_atomic(fig, path: str | Path, dpi: int = 80) -> Path:
    """``fig.savefig`` as PNG to ``path`` atomically."""
    return atomic_write(path, lambda fh: fig.savefig(fh, dpi=dpi, format="png", bbox_inches="tight"))


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
