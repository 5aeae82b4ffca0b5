"""Canonical JSON and the stable hashes that name studies and runs.

A hash must not change between Python versions, processes or machines, so it is taken over a
canonical JSON text (sorted keys, no whitespace, tuples as lists) and never over ``hash()`` or a
pickle.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import pathlib
from typing import Any


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"cannot put a {type(obj).__name__} into a study hash: {obj!r}")


def _check_finite(obj: Any) -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"non-finite float {obj} cannot be hashed stably")
    if isinstance(obj, dict):
        for v in obj.values():
            _check_finite(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_finite(v)


def canonical_json(obj: Any) -> str:
    """The one text a hash is taken over: sorted keys, compact separators, ASCII only."""
    plain = json.loads(json.dumps(obj, default=_default))  # tuples -> lists, dataclasses -> dicts
    _check_finite(plain)
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def stable_hash(obj: Any, length: int = 64) -> str:
    """SHA-256 (hex) of :func:`canonical_json`, truncated to ``length`` characters."""
    return hashlib.sha256(canonical_json(obj).encode("ascii")).hexdigest()[:length]
