"""Lets `mmkeras.train(...)` and `mmkeras.evaluate(...)` be calls although `train/` and `evaluate/` are packages.

Importing `mmkeras.train.loop` makes Python bind the package `mmkeras.train`
as an attribute of `mmkeras`, which would hide a function of the same name.
Giving those package modules a `__call__` keeps the house layout and the
public API both.
"""
from __future__ import annotations

import sys
import types
from collections.abc import Callable


def make_module_callable(module_name: str, function: Callable) -> None:
    """Make `sys.modules[module_name](...)` call `function(...)`.

    Args:
      module_name: an already-imported module's name (pass `__name__`).
      function: what calling the module does.
    """
    module = sys.modules[module_name]

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

    CallableModule.__doc__ = function.__doc__
    module.__class__ = CallableModule
