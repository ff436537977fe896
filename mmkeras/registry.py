"""Name lookup with one helpful error for every table of mmkeras."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str, kind: str) -> T:
    """Return `table[name]`, or raise an error listing the valid names.

    Every user-facing name (modality, fusion, dataset, backbone, ...) goes
    through here so that a typo always gets the same kind of answer.

    Args:
      table: a read-only mapping from names to objects.
      name: the name the user gave.
      kind: what the names are, for the message (e.g. "fusion").

    Returns:
      The object registered under `name`.

    Raises:
      ValueError: if `name` is not a key of `table`.

    Example:
      >>> lookup({"concat": 1}, "concat", "fusion")
      1
    """
    if name not in table:
        raise ValueError(f"Unknown {kind} {name!r}. Expected one of {sorted(table)}.")
    return table[name]
