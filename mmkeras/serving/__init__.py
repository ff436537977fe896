"""Talking to TF Serving: `Client` (REST and gRPC) and a loopback stand-in server for tests and notebooks.

Modules: `client` (`Client`), `protocol` (REST JSON and gRPC proto formats,
`ServingError`) and `testing` (`LoopbackServer`: gRPC PredictionService and
REST on 127.0.0.1 backed by `tf.saved_model.load`). Names are imported on
first use.
"""
from __future__ import annotations

import importlib

# Public name -> module that defines it. Written out once; read-only.
_EXPORTS = {
    "Client": "mmkeras.serving.client",
    "ServingError": "mmkeras.serving.protocol",
    "LoopbackServer": "mmkeras.serving.testing",
}

# The same names as `_EXPORTS`, sorted.
__all__ = [
    "Client",
    "LoopbackServer",
    "ServingError",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mmkeras.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
