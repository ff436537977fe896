"""Talking to TF Serving: `Client` (REST and gRPC) and a loopback stand-in server for tests and notebooks.

Modules: `client` (`Client`), `protocol` (REST JSON and gRPC proto formats,
`ServingError`) and `testing` (`LoopbackServer`: gRPC PredictionService and
REST on 127.0.0.1 backed by `tf.saved_model.load`). Names are imported on
first use.
"""
from __future__ import annotations

from mmkeras._lazy import lazy_attributes

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


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
