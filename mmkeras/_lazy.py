"""Lazy package attributes: public names imported on first use, so importing a package stays cheap."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_attributes(module_name: str, exports: Mapping[str, str]) -> tuple[Callable, Callable]:
    """Return the `__getattr__` and `__dir__` of a package whose names live in submodules.

    Args:
      module_name: the package's `__name__`.
      exports: public name -> the module that defines it.

    Returns:
      `(__getattr__, __dir__)`, to assign at the package's top level.

    Example:
      >>> __getattr__, __dir__ = lazy_attributes(__name__, {"load_spec": "mmkeras.spec"})
    """

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__():
        return sorted(set(vars(sys.modules[module_name])) | set(exports))

    return __getattr__, __dir__
