"""Talking to TF Serving: `Client` (REST and gRPC).

Modules: `client` (`Client`). The wire formats and `ServingError` live in
`mmkeras.wire`, below both this package and `mmkeras.export`. `_loopback`
(`LoopbackServer`: gRPC PredictionService and REST on 127.0.0.1 backed by
`tf.saved_model.load`) is test support for the tests and notebooks, not public
API. Names are imported on first use.
"""
from __future__ import annotations

from mmkeras._lazy import lazy_attributes

# Public name -> module that defines it. Written out once; read-only.
_EXPORTS = {
    "Client": "mmkeras.serving.client",
    "ServingError": "mmkeras.wire",
}

# The same names as `_EXPORTS`, sorted.
__all__ = [
    "Client",
    "ServingError",
]


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
