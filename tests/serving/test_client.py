"""Client over gRPC and REST against the loopback server: same answers as model.predict, from every row form."""
from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from mmkeras import explain
from mmkeras.data.pipeline import make_dataset
from mmkeras.export import signatures as sig
from mmkeras.export.requests import example_columns
from mmkeras.serving import Client, ServingError

ROWS = 6


@pytest.fixture(scope="module")
def manifest_rows(served):
    """The first test rows of the tiny manifest (a pandas DataFrame) and the Keras model's answers for them."""
    pandas = pytest.importorskip("pandas")
    table = pandas.read_csv(served.spec.data_dir / "manifest.csv")
    rows = table[table["split"] == "test"].head(ROWS)
    features, labels = next(iter(make_dataset(served.spec, "test", batch_size=ROWS)))
    expected = served.model.predict(features, verbose=0)["probabilities"]
    assert list(labels.numpy()) == [served.spec.label.class_names.index(name) for name in rows["label"]]
    assert (rows["caption"].isna() | rows["sound"].isna()).any(), "the rows should include missing modalities"
    return rows, expected


@pytest.mark.parametrize("protocol, rest_format", [("grpc", "instances"), ("rest", "instances"), ("rest", "inputs")])
def test_round_trip_matches_model_predict(served, manifest_rows, protocol, rest_format):
    rows, expected = manifest_rows
    outputs = served.client().predict(rows, protocol=protocol, rest_format=rest_format)
    assert set(outputs) == {"probabilities", "class_id", "class_name"}
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(outputs["class_id"], expected.argmax(axis=1))
    assert list(outputs["class_name"]) == [served.spec.label.class_names[i] for i in expected.argmax(axis=1)]


def test_rows_can_be_dicts_series_lists_paths_or_bytes(served, manifest_rows):
    rows, expected = manifest_rows
    first = rows.iloc[0]
    root = served.spec.data_dir
    as_paths = {"caption": first["caption"], "picture": first["picture"], "sound": first["sound"]}
    as_absolute = {**as_paths, "picture": root / first["picture"], "sound": str(root / first["sound"])}
    as_bytes = {**as_paths, "picture": (root / first["picture"]).read_bytes(),
                "sound": (root / first["sound"]).read_bytes()}
    client = served.client()
    for row in (as_paths, as_absolute, as_bytes, first, [as_paths, as_bytes]):
        probabilities = client.predict(row)["probabilities"]
        for answer in probabilities:
            np.testing.assert_allclose(answer, expected[0], atol=1e-5)
    # Without a spec, paths are recognised by their image/WAV extension (absolute here: no root given).
    bare = Client(served.server.host, grpc_port=served.server.grpc_port, model_name=served.server.model_name)
    np.testing.assert_allclose(bare.predict(as_absolute)["probabilities"][0], expected[0], atol=1e-5)
    bare.close()


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_waveform_and_presence_signatures_over_the_wire(served, protocol):
    waveform = example_columns(served.spec, sig.WAVEFORM, batch_size=3)
    rows = [{name: values[i] for name, values in waveform.items()} for i in range(3)]
    client = served.client(signature_name=sig.WAVEFORM)
    got = client.predict(rows, protocol=protocol)["probabilities"]
    flagged = example_columns(served.spec, sig.WITH_PRESENCE, batch_size=3)
    rows = [{name: values[i] for name, values in flagged.items()} for i in range(3)]
    expected = client.predict(rows, protocol=protocol, signature_name=sig.WITH_PRESENCE)["probabilities"]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    decoded = served.model.predict(example_columns(served.spec, sig.DECODED, batch_size=3), verbose=0)
    np.testing.assert_allclose(got, decoded["probabilities"], atol=1e-5)


@pytest.mark.parametrize("protocol, code", [("grpc", "NOT_FOUND"), ("rest", 404)])
def test_an_unknown_model_or_version_is_not_found(served, protocol, code):
    row = {"caption": "red", "picture": "", "sound": ""}
    for options in ({"model_name": "nope"}, {"model_version": 7}):
        with pytest.raises(ServingError, match="not found") as caught:
            served.client(**options).predict(row, protocol=protocol)
        assert caught.value.code == code


def test_rest_status_says_available(served):
    url = f"http://{served.server.host}:{served.server.rest_port}/v1/models/{served.server.model_name}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        status = json.loads(answer.read())
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    assert status["model_version_status"][0]["version"] == "1"


def test_client_argument_errors(served):
    with pytest.raises(ValueError, match="rest_port"):
        Client("localhost", model_name="m")
    client = served.client()
    with pytest.raises(ValueError, match="protocol"):
        client.predict({"caption": "x"}, protocol="carrier-pigeon")
    with pytest.raises(ValueError, match="same inputs"):
        client.predict([{"caption": "x", "picture": "", "sound": ""}, {"caption": "x"}])
    with pytest.raises(FileNotFoundError, match="no-such.png"):
        client.predict({"caption": "x", "picture": "no-such.png", "sound": ""})
    with pytest.raises(ValueError, match="takes a row"):
        client.predict("caption")


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_explain_gives_the_occlusion_scores_of_mmkeras_explain(served, manifest_rows, protocol):
    rows, expected = manifest_rows
    outputs = served.client().explain(rows, protocol=protocol)
    features, _ = next(iter(make_dataset(served.spec, "test", batch_size=ROWS)))
    explained = explain(served.model, features, method="occlusion")
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    for name in served.spec.feature_names:
        np.testing.assert_allclose(outputs[f"{name}_attribution"], explained["scores"][name], atol=1e-5)
