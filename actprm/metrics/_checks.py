"""Input checks shared by the benchmark metrics: each failure is a ``ValueError`` naming the item."""

from __future__ import annotations

import numbers
from collections.abc import Sequence, Sized
from typing import Any

import numpy as np


def check_same_length(**columns: Sized) -> int:
    """Return the common length of ``columns`` or raise naming every column and its length."""
    lengths = {name: len(column) for name, column in columns.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name} has {length}" for name, length in lengths.items())
        raise ValueError(f"inputs differ in length: {described} items")
    return next(iter(lengths.values()), 0)


def is_list_like(value: Any) -> bool:
    """Whether ``value`` is a list, tuple, NumPy array or other sequence, but not a string."""
    return isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes))


def as_int(value: Any) -> int | None:
    """``value`` as an ``int`` if it is a Python or NumPy integer or boolean, else ``None`` (floats too)."""
    if isinstance(value, (numbers.Integral, np.bool_)):
        return int(value)
    return None
