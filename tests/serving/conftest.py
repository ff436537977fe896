"""One exported tiny classifier served by a LoopbackServer (gRPC + REST on 127.0.0.1) for the serving tests."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

VOCABULARIES = {"caption": ["red", "green", "blue", "ball", "box"]}


@pytest.fixture(scope="session")
def served(tiny_spec, tmp_path_factory, tiny_model):
    """An untrained gated classifier with temperature 2, exported and served: model, spec, path, server, client factory.

    The temperature makes every client test also check that the export carries a calibrated model's
    temperature (without it the served probabilities would differ from `model`'s).
    """
    import keras

    from mmkeras import build_classifier
    from mmkeras.export import export_for_serving
    from mmkeras.models.calibration import with_temperature
    from mmkeras.serving import Client
    from mmkeras.serving._loopback import LoopbackServer

    keras.utils.set_random_seed(0)
    model = build_classifier(tiny_spec, fusion="gated", seed=0, **tiny_model(vocabularies=VOCABULARIES))
    model = with_temperature(model)
    model.get_layer("temperature").temperatures.assign([2.0])
    path = export_for_serving(model, tiny_spec, tmp_path_factory.mktemp("saved_models"))
    with LoopbackServer(path) as server:

        def client(**kwargs):
            options = {"rest_port": server.rest_port, "grpc_port": server.grpc_port, "model_name": server.model_name,
                       "spec": tiny_spec, "root": tiny_spec.data_dir, **kwargs}
            return Client(server.host, **options)

        yield SimpleNamespace(model=model, spec=tiny_spec, path=path, server=server, client=client)
