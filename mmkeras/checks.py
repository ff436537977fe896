"""Argument checks shared by every layer: one message per kind of mistake.

Why one module: `True` is an `int` in Python, so "a positive integer" is
`isinstance(value, int) and not isinstance(value, bool) and value > 0`, a
line that was written out two dozen times with drifting messages. Each check
returns the value as a plain Python `int` / `float` (numpy scalars included),
ready to store in a layer's config.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

__all__ = [
    "check_int_at_least", "check_number", "check_positive_int", "check_rate", "is_integer", "is_number", "is_rate",
]


def is_integer(value: object) -> bool:
    """True for Python and numpy integers, False for `bool` (which Python counts as an `int`)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """True for Python and numpy integers and floats, False for `bool`."""
    return isinstance(value, Real) and not isinstance(value, bool)


def is_rate(value: object) -> bool:
    """True for a number in [0, 1): a probability of dropping, or a share that must leave something."""
    return is_number(value) and 0.0 <= value < 1.0


def check_positive_int(value: object, name: str, *, allow_zero: bool = False, hint: str = "") -> int:
    """Return `value` as an `int` if it is a positive (or, with `allow_zero`, non-negative) integer.

    Args:
      value: what the caller passed.
      name: the argument's name, for the message.
      allow_zero: accept 0 too.
      hint: text added after "must be a positive integer" (e.g. " or None (next free version)").

    Returns:
      `int(value)`.

    Raises:
      ValueError: naming the argument and what it got, for booleans, non-integers and values too small.

    Example:
      >>> check_positive_int(0, "embed_dim")
      Traceback (most recent call last):
      ValueError: `embed_dim` must be a positive integer, got 0.
    """
    if not is_integer(value) or value < (0 if allow_zero else 1):
        expected = "a non-negative integer" if allow_zero else "a positive integer"
        raise ValueError(f"`{name}` must be {expected}{hint}, got {value!r}.")
    return int(value)


def check_int_at_least(value: object, name: str, minimum: int, *, hint: str = "") -> int:
    """Return `value` as an `int` if it is an integer >= `minimum` (not a bool).

    Raises:
      ValueError: e.g. "`num_classes` must be an integer >= 2, got 1."
    """
    if not is_integer(value) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}{hint}, got {value!r}.")
    return int(value)


def check_number(
    value: object, name: str, *, minimum: float = 0.0, inclusive: bool = False, finite: bool = False, hint: str = ""
) -> float:
    """Return `value` as a `float` if it is a number above `minimum` (or at it, with `inclusive`).

    Args:
      value: what the caller passed.
      name: the argument's name, for the message.
      minimum: the bound.
      inclusive: accept `minimum` itself.
      finite: refuse infinity too.
      hint: text added after what was expected (e.g. " (CLIP starts at 0.07)").

    Returns:
      `float(value)`.

    Raises:
      ValueError: for booleans, non-numbers, NaN and values out of range, e.g.
        "`alpha` must be a positive number, got 0."
    """
    ok = is_number(value) and (value >= minimum if inclusive else value > minimum)
    if not ok or (finite and not math.isfinite(value)):
        if minimum == 0 and not inclusive:
            expected = "a positive number"
        else:
            expected = f"a number {'>=' if inclusive else '>'} {minimum:g}"
        raise ValueError(f"`{name}` must be {expected}{hint}, got {value!r}.")
    return float(value)


def check_rate(value: object, name: str, *, hint: str = "") -> float:
    """Return `value` as a `float` if it is a probability in [0, 1) (a dropout rate: 1 would drop everything).

    Args:
      value: what the caller passed.
      name: the argument's name, for the message (e.g. "rate['text']").
      hint: text added after what was expected.

    Returns:
      `float(value)`.

    Raises:
      ValueError: for booleans, non-numbers, NaN and values outside [0, 1), e.g.
        "`rate['text']` must be a number in [0, 1), got 1.2."

    Example:
      >>> check_rate(0.3, "modality_dropout")
      0.3
    """
    if not is_rate(value):
        raise ValueError(f"`{name}` must be a number in [0, 1){hint}, got {value!r}.")
    return float(value)
