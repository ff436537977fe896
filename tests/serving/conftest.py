"""One exported tiny classifier served by a LoopbackServer (gRPC + REST on 127.0.0.1) for the serving tests."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

VOCABULARIES = {"caption": ["red", "green", "blue", "ball", "box"]}


@pytest.fixture(scope="session")
def served(tiny_spec, tmp_path_factory, tiny_model):
    """An untrained gated classifier, exported and served: model, spec, path, server, and a client factory."""
    import keras

    from mmkeras import build_classifier
    from mmkeras.export import export_for_serving
    from mmkeras.serving import Client
    from mmkeras.serving._loopback import LoopbackServer

    keras.utils.set_random_seed(0)
    model = build_classifier(tiny_spec, fusion="gated", seed=0, **tiny_model(vocabularies=VOCABULARIES))
    path = export_for_serving(model, tiny_spec, tmp_path_factory.mktemp("saved_models"))
    with LoopbackServer(path) as server:

        def client(**kwargs):
            options = {"rest_port": server.rest_port, "grpc_port": server.grpc_port, "model_name": server.model_name,
                       "spec": tiny_spec, "root": tiny_spec.data_dir, **kwargs}
            return Client(server.host, **options)

        yield SimpleNamespace(model=model, spec=tiny_spec, path=path, server=server, client=client)
