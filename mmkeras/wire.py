"""TF Serving's wire formats: REST JSON bodies, gRPC `PredictRequest` protos and the model folder layout.

One module turns columns of request values into what TF Serving reads, and
its answers back into numpy arrays, so that the client, the loopback test
server, the warm-up file and the example request bodies written next to an
export all agree on the format. It sits below both `mmkeras.export` (which
writes what TF Serving reads) and `mmkeras.serving` (which talks to TF
Serving), so neither needs the other.

Columns are `{input_name: numpy array}` with one row per example. A string
input's column is an object array whose items are `str` (text, sent as a JSON
string) or `bytes` (file contents, sent as `{"b64": ...}` in JSON); gRPC sends
both as `DT_STRING` bytes.

A model folder (TF Serving's `base_path`) holds integer version folders;
TF Serving serves the highest (`versions`, `resolve_version_dir`).
"""
from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

REST_FORMATS = ("instances", "inputs")
DEFAULT_SIGNATURE = "serving_default"
# The signature that explains each prediction: raw inputs in, probabilities and `<feature>_attribution` out.
EXPLAIN_SIGNATURE = "serving_explain"
ATTRIBUTION_SUFFIX = "_attribution"


class ServingError(RuntimeError):
    """A prediction request that the model server refused or could not answer.

    Attributes:
      code: the gRPC status name (e.g. "INVALID_ARGUMENT") or the HTTP status
        (e.g. 400) of the answer.
      message: the server's message; for a bad input it names the input.
    """

    def __init__(self, message: str, code: Any = None):
        super().__init__(f"[{code}] {message}" if code is not None else message)
        self.code = code
        self.message = message


def _json_value(value: Any) -> Any:
    """Turn one numpy item or array into JSON: bytes become {"b64": ...}, arrays lists."""
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind in "SU":
            return [_json_value(item) for item in value]
        return value.tolist()
    if isinstance(value, (bytes, np.bytes_)):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_rest_body(
    columns: Mapping[str, np.ndarray], signature_name: str = DEFAULT_SIGNATURE, rest_format: str = "instances"
) -> dict:
    """Build the JSON body of a TF Serving REST `:predict` request.

    Args:
      columns: input name -> array with one row per example (see the module docstring).
      signature_name: the signature to run.
      rest_format: "instances" (row format: a list of one object per example)
        or "inputs" (columnar format: one list per input).

    Returns:
      A JSON-ready dict, e.g. `{"signature_name": "serving_default",
      "instances": [{"caption": "a red ball", "picture": {"b64": "iVBORw0..."}}]}`.

    Raises:
      ValueError: for an unknown `rest_format` or columns of different lengths.

    Example:
      >>> to_rest_body({"caption": np.array(["hi"], object)})
      {'signature_name': 'serving_default', 'instances': [{'caption': 'hi'}]}
    """
    if rest_format not in REST_FORMATS:
        raise ValueError(f"Unknown REST format {rest_format!r}. Expected one of {list(REST_FORMATS)}.")
    if rest_format == "inputs":
        return {"signature_name": signature_name, "inputs": {k: _json_value(np.asarray(v)) for k, v in columns.items()}}
    sizes = {name: len(values) for name, values in columns.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"Every input needs one value per example, got these lengths: {sizes}.")
    count = next(iter(sizes.values()), 0)
    instances = [{name: _json_value(values[i]) for name, values in columns.items()} for i in range(count)]
    return {"signature_name": signature_name, "instances": instances}


def _output_array(values: Any) -> np.ndarray:
    """A JSON output value as numpy: numbers as float32/int64 arrays, strings as object arrays of str."""
    array = np.asarray(values, dtype=object)
    flat = [item for item in array.reshape(-1)] if array.ndim else [array.item()]
    if flat and all(isinstance(item, str) for item in flat):
        return array
    if flat and all(isinstance(item, bool) for item in flat):
        return array.astype(bool)
    if flat and all(isinstance(item, int) and not isinstance(item, bool) for item in flat):
        return array.astype(np.int64)
    return np.asarray(values, dtype=np.float32)


def from_rest_response(body: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Turn a TF Serving REST `:predict` answer into output name -> numpy array.

    Handles both answer forms: `{"predictions": [...]}` (to an `instances`
    request) and `{"outputs": {...}}` (to an `inputs` request). A model with a
    single output is answered without names; it comes back as `"output"`.

    Args:
      body: the parsed JSON of the answer.

    Returns:
      Output name -> array with one row per example: object arrays of `str`
      for strings, bool or int64 arrays where every item is a bool or an int,
      float32 arrays otherwise.

    Raises:
      ServingError: if the body is an error (`{"error": ...}`) or has neither form.

    Example:
      >>> from_rest_response({"predictions": [{"class_id": 2, "class_name": "blue"}]})["class_id"]
      array([2])
    """
    if "error" in body:
        raise ServingError(str(body["error"]))
    if "predictions" in body:
        predictions = body["predictions"]
        if predictions and isinstance(predictions[0], Mapping):
            return {name: _output_array([row[name] for row in predictions]) for name in predictions[0]}
        return {"output": _output_array(predictions)}
    if "outputs" in body:
        outputs = body["outputs"]
        if isinstance(outputs, Mapping):
            return {name: _output_array(values) for name, values in outputs.items()}
        return {"output": _output_array(outputs)}
    raise ServingError(f"The server's answer has neither 'predictions' nor 'outputs': {json.dumps(body)[:200]}")


def to_tensor_proto(values: np.ndarray):
    """A numpy column as a `TensorProto`; str items are sent as their UTF-8 bytes."""
    import tensorflow as tf

    values = np.asarray(values)
    if values.dtype == object or values.dtype.kind == "U":
        flat = [item.encode("utf-8") if isinstance(item, str) else bytes(item) for item in values.reshape(-1)]
        values = np.array(flat, dtype=object).reshape(values.shape)
        return tf.make_tensor_proto(values, dtype=tf.string)
    return tf.make_tensor_proto(values)


def from_tensor_proto(proto) -> np.ndarray:
    """A `TensorProto` as numpy; string tensors become object arrays of `str` where they are UTF-8."""
    import tensorflow as tf

    array = tf.make_ndarray(proto)
    if array.dtype == object:
        return _decode_strings(array)
    return array


def _decode_strings(array: np.ndarray) -> np.ndarray:
    def decode(item):
        try:
            return item.decode("utf-8") if isinstance(item, bytes) else item
        except UnicodeDecodeError:
            return item

    return np.vectorize(decode, otypes=[object])(array) if array.size else array


def to_predict_request(
    columns: Mapping[str, np.ndarray],
    model_name: str,
    signature_name: str = DEFAULT_SIGNATURE,
    version: int | None = None,
):
    """Build a gRPC `PredictRequest` (from `tensorflow-serving-api`) for the columns.

    Args:
      columns: input name -> array with one row per example.
      model_name: the served model's name.
      signature_name: the signature to run.
      version: a model version, or None for the server's latest.

    Returns:
      A `tensorflow_serving.apis.predict_pb2.PredictRequest`.

    Example:
      >>> request = to_predict_request({"caption": np.array(["hi"], object)}, "tiny_concat")
      >>> request.inputs["caption"].dtype  # DT_STRING
      7
    """
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, values in columns.items():
        request.inputs[name].CopyFrom(to_tensor_proto(values))
    return request


def from_predict_response(response) -> dict[str, np.ndarray]:
    """Turn a gRPC `PredictResponse` into output name -> numpy array.

    The gRPC counterpart of `from_rest_response`, so a client gets the same
    arrays whichever protocol it used.

    Args:
      response: a `tensorflow_serving.apis.predict_pb2.PredictResponse`.

    Returns:
      Output name -> array with one row per example; string outputs are object
      arrays of `str` where they are UTF-8 (of `bytes` otherwise).

    Example:
      >>> from_predict_response(stub.Predict(request))["class_name"]
      array(['blue'], dtype=object)
    """
    return {name: from_tensor_proto(proto) for name, proto in response.outputs.items()}


def versions(model_dir: str | os.PathLike) -> list[int]:
    """The integer version folders under a model folder, sorted (hidden and other folders ignored).

    TF Serving serves the highest of these; exports use them to pick the next
    free version and to find a model folder's latest version.

    Args:
      model_dir: a model folder, `base_dir/<name>`.

    Returns:
      The versions in ascending order; an empty list if `model_dir` is missing
      or holds no version folders.

    Example:
      >>> versions("saved_models/tiny_concat")
      [1, 2]
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def resolve_version_dir(path: str | os.PathLike) -> Path:
    """Turn a version folder, or a model folder (its latest version), into the version folder.

    Lets readers of an export (metadata, checks, clients, the loopback server)
    accept either what `export_for_serving` returned or its parent, as TF
    Serving does with its `base_path`.

    Args:
      path: a version folder (it holds `saved_model.pb`) or a model folder.

    Returns:
      `path` itself if it holds `saved_model.pb`, else its highest version folder.

    Raises:
      FileNotFoundError: if `path` holds neither a SavedModel nor version folders.

    Example:
      >>> resolve_version_dir("saved_models/tiny_concat")
      PosixPath('saved_models/tiny_concat/2')
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    existing = versions(path)
    if not existing:
        raise FileNotFoundError(
            f"{path} is neither a SavedModel folder (no saved_model.pb) nor a model folder with integer "
            "version sub-folders. Pass what export_for_serving returned, or its parent."
        )
    return path / str(existing[-1])
