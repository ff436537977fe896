"""A loopback stand-in for TF Serving: gRPC `PredictionService` and REST `:predict` on 127.0.0.1.

The real model server cannot be installed everywhere (not in the tests, not
on a laptop without docker), so this module serves an exported folder with
`tf.saved_model.load` behind the two TF Serving APIs: gRPC
`tensorflow.serving.PredictionService/Predict` (real protos from
`tensorflow-serving-api`) and REST `POST /v1/models/<name>[/versions/<n>]:predict`
(both JSON forms) plus `GET /v1/models/<name>` (status). Requests are checked
against the signature as TF Serving checks them (missing, unknown, wrongly
typed or shaped inputs are INVALID_ARGUMENT / HTTP 400 naming the input), and
errors inside the graph come back as their TF status (an input over its
feature's size limit, refused by the decoders before decoding, is
INVALID_ARGUMENT naming the feature, the declared size and the option);
nothing a request holds stops the server. It is for tests, notebooks and the
load test, not production: one model, one version, no batching.

`python -m mmkeras.serving._loopback <export>` serves in its own process (so a
load test can watch the server's memory apart from its clients'); the
hostile-input builders (`decompression_bomb_png`, `wav_header_only`,
`hostile_inputs`) make the inputs such a test sends: small on the wire, huge
if a decoder believed their headers.

Test support, not public API: nothing in `mmkeras.serving.__all__` names it.
It lives in the package (not in `tests/`) only because notebook 03 serves its
export with it; like the client, it needs nothing from `mmkeras.export`.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import struct
import sys
import threading
import zlib
from collections.abc import Mapping, Sequence
from concurrent import futures
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import numpy as np

from mmkeras.checks import is_number
from mmkeras.wire import DEFAULT_SIGNATURE, ServingError, from_tensor_proto, resolve_version_dir, to_tensor_proto

LOOPBACK = "127.0.0.1"
# gRPC status name -> HTTP status of the REST answer, as TF Serving maps them.
HTTP_STATUS = {
    "INVALID_ARGUMENT": HTTPStatus.BAD_REQUEST,
    "FAILED_PRECONDITION": HTTPStatus.BAD_REQUEST,
    "OUT_OF_RANGE": HTTPStatus.BAD_REQUEST,
    "NOT_FOUND": HTTPStatus.NOT_FOUND,
    "UNIMPLEMENTED": HTTPStatus.NOT_IMPLEMENTED,
    "INTERNAL": HTTPStatus.INTERNAL_SERVER_ERROR,
}
REST_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?(?P<verb>:predict)?$")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
# The name scope of a feature's decoder ops (see mmkeras.data.decoders), as it shows in graph errors.
DECODER_SCOPE = re.compile(r"decode_([A-Za-z_][A-Za-z0-9_]*)/")


class SavedModelBackend:
    """Runs checked requests against the signatures of one loaded SavedModel version.

    Args:
      path: a version folder, or a model folder (its latest version is loaded).

    Example:
      >>> backend = SavedModelBackend("saved_models/tiny_concat")
      >>> backend.predict("serving_default", {"caption": ..., "picture": ..., "sound": ...})["class_name"]
    """

    def __init__(self, path: str | Path):
        import tensorflow as tf

        self.path = resolve_version_dir(path)
        self.version = int(self.path.name) if self.path.name.isdigit() else 1
        self._loaded = tf.saved_model.load(str(self.path))
        self.signatures = dict(self._loaded.signatures)

    def input_specs(self, signature_name: str) -> dict:
        """Input name -> `tf.TensorSpec` of a signature.

        Raises:
          ServingError: FAILED_PRECONDITION if the model has no such signature.
        """
        if signature_name not in self.signatures:
            raise ServingError(
                f'Serving signature key "{signature_name}" not found. The model has {sorted(self.signatures)}.',
                "FAILED_PRECONDITION",
            )
        return dict(self.signatures[signature_name].structured_input_signature[1])

    def predict(self, signature_name: str, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check the inputs against the signature, run it and return numpy outputs.

        Raises:
          ServingError: INVALID_ARGUMENT for a missing, unknown, wrongly typed
            or shaped input (the message names it) or an input the decoders
            refuse; FAILED_PRECONDITION for an unknown signature; the TF status
            of any other error in the graph.
        """
        import tensorflow as tf

        signature_name = signature_name or DEFAULT_SIGNATURE
        specs = self.input_specs(signature_name)
        check_inputs(specs, columns, signature_name)
        tensors = {name: tf.constant(np.asarray(columns[name]), specs[name].dtype) for name in specs}
        try:
            outputs = self.signatures[signature_name](**tensors)
        except tf.errors.OpError as error:
            raise ServingError(_name_failing_input(error.message, specs), _status_name(error)) from None
        return {name: value.numpy() for name, value in outputs.items()}


def _name_failing_input(message: str, specs: Mapping[str, Any]) -> str:
    """Prefix a graph error with the input whose decoder failed (its ops live under `decode_<name>/`)."""
    match = DECODER_SCOPE.search(message)
    if match and match.group(1) in specs and f"`{match.group(1)}`" not in message:
        return f"Input `{match.group(1)}` could not be decoded: {message}"
    return message


def _status_name(error) -> str:
    """The gRPC status name ("INVALID_ARGUMENT") of a `tf.errors.OpError` (TF uses gRPC's codes)."""
    import grpc

    names = {status.value[0]: status.name for status in grpc.StatusCode}
    return names.get(error.error_code, "INTERNAL")


def _dtype_name(dtype) -> str:
    """TF Serving's name of a dtype, e.g. "DT_STRING", "DT_FLOAT"."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    return types_pb2.DataType.Name(tf.as_dtype(dtype).as_datatype_enum)


def check_inputs(specs: Mapping[str, Any], columns: Mapping[str, np.ndarray], signature_name: str) -> None:
    """Check request columns against a signature's `TensorSpec`s, as TF Serving does before running it.

    Args:
      specs: input name -> `tf.TensorSpec`.
      columns: input name -> numpy array.
      signature_name: for the messages.

    Raises:
      ServingError: INVALID_ARGUMENT naming the first missing, unknown,
        wrongly typed or wrongly shaped input.
    """
    import tensorflow as tf

    missing = sorted(set(specs) - set(columns))
    unknown = sorted(set(columns) - set(specs))
    if missing or unknown:
        raise ServingError(
            f"Signature '{signature_name}' expects inputs {sorted(specs)}; missing: {missing}, unknown: {unknown}. "
            "Send every input named in the signature (an empty string marks a missing modality).",
            "INVALID_ARGUMENT",
        )
    for name, spec in specs.items():
        array = np.asarray(columns[name])
        if not _dtype_fits(array, spec.dtype):
            got = "DT_STRING" if array.dtype == object or array.dtype.kind in "SU" else _dtype_name(array.dtype)
            raise ServingError(
                f"Input `{name}` of signature '{signature_name}' must be {_dtype_name(spec.dtype)}, got {got}.",
                "INVALID_ARGUMENT",
            )
        if not tf.TensorShape(array.shape).is_compatible_with(spec.shape):
            raise ServingError(
                f"Input `{name}` of signature '{signature_name}' must have shape {_shape_text(spec.shape)}, "
                f"got {list(array.shape)}.",
                "INVALID_ARGUMENT",
            )


def _dtype_fits(array: np.ndarray, dtype) -> bool:
    import tensorflow as tf

    dtype = tf.as_dtype(dtype)
    if dtype == tf.string:
        return array.dtype.kind in "SU" or (
            array.dtype == object and all(isinstance(item, (bytes, str)) for item in array.reshape(-1))
        )
    if array.dtype == object or array.dtype.kind in "SU":
        return False
    return tf.as_dtype(array.dtype) == dtype


def _shape_text(shape) -> str:
    return "[" + ", ".join("batch" if i == 0 and d is None else ("any" if d is None else str(d))
                           for i, d in enumerate(shape.as_list())) + "]"


def _json_to_array(name: str, value: Any, dtype) -> np.ndarray:
    """A JSON value (list of rows) as a numpy array of the signature's dtype, as TF Serving reads JSON."""
    import tensorflow as tf

    dtype = tf.as_dtype(dtype)

    def fail(item):
        raise ServingError(
            f"Input `{name}` must hold {_dtype_name(dtype)} values ({_json_kinds(dtype)}), "
            f"got {json.dumps(item)[:80]}.",
            "INVALID_ARGUMENT",
        )

    def convert(item):
        if isinstance(item, list):
            return [convert(sub) for sub in item]
        if dtype == tf.string:
            if isinstance(item, str):
                return item.encode("utf-8")
            if isinstance(item, Mapping) and set(item) == {"b64"} and isinstance(item["b64"], str):
                try:
                    return base64.b64decode(item["b64"], validate=True)
                except ValueError:
                    fail(item)
            fail(item)
        if dtype == tf.bool:
            return item if isinstance(item, bool) else fail(item)
        if not is_number(item):
            fail(item)
        return item

    converted = convert(value)
    if dtype != tf.string:
        try:
            return np.asarray(converted, dtype=dtype.as_numpy_dtype)
        except ValueError:
            pass
    else:
        array = _object_array(converted)
        if array is not None:
            return array
    raise ServingError(f"Input `{name}` is a ragged list; every row must have the same length.", "INVALID_ARGUMENT")


def _object_array(nested: Any) -> np.ndarray | None:
    """A nested list of bytes as an object array (numpy would split bytes into characters), None if ragged."""
    shape, probe = [], nested
    while isinstance(probe, list):
        shape.append(len(probe))
        probe = probe[0] if probe else None
    flat = []

    def collect(item, depth) -> bool:
        if depth == len(shape):
            flat.append(item)
            return not isinstance(item, list)
        return isinstance(item, list) and len(item) == shape[depth] and all(collect(sub, depth + 1) for sub in item)

    if not collect(nested, 0):
        return None
    array = np.empty(shape, object)
    array.reshape(-1)[:] = flat
    return array


def _json_kinds(dtype) -> str:
    import tensorflow as tf

    if dtype == tf.string:
        return 'JSON strings, or {"b64": ...} objects for binary data'
    if dtype == tf.bool:
        return "true or false"
    return "numbers"


def _json_output(array: np.ndarray) -> Any:
    if array.dtype == object:
        return [_json_output(item) if isinstance(item, np.ndarray) else _json_string(item) for item in array]
    return array.tolist()


def _json_string(item: bytes) -> Any:
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(item).decode("ascii")}


def rest_predict(backend: SavedModelBackend, body: Mapping[str, Any]) -> dict:
    """Answer a TF Serving REST `:predict` body (instances or inputs form) with a JSON-ready dict.

    Raises:
      ServingError: INVALID_ARGUMENT for a malformed body or bad inputs, or the
        backend's error.
    """
    if not isinstance(body, Mapping) or ("instances" in body) == ("inputs" in body):
        raise ServingError('The JSON body must be an object with exactly one of "instances" and "inputs".',
                           "INVALID_ARGUMENT")
    signature_name = body.get("signature_name") or DEFAULT_SIGNATURE
    specs = backend.input_specs(signature_name)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise ServingError('"instances" must be a non-empty list of examples.', "INVALID_ARGUMENT")
        if not all(isinstance(row, Mapping) for row in instances):
            if len(specs) != 1:
                raise ServingError(
                    f"Each instance must be an object naming the inputs {sorted(specs)}.", "INVALID_ARGUMENT"
                )
            instances = [{next(iter(specs)): row} for row in instances]
        keys = set().union(*instances)
        for index, row in enumerate(instances):
            if set(row) != keys:
                raise ServingError(
                    f"Instance {index} has inputs {sorted(row)} but others have {sorted(keys)}; every instance "
                    "needs the same inputs.",
                    "INVALID_ARGUMENT",
                )
        raw = {key: [row[key] for row in instances] for key in keys}
    else:
        raw = body["inputs"]
        if not isinstance(raw, Mapping):
            if len(specs) != 1:
                raise ServingError(f'"inputs" must be an object naming the inputs {sorted(specs)}.',
                                   "INVALID_ARGUMENT")
            raw = {next(iter(specs)): raw}
    columns = {
        key: _json_to_array(key, value, specs[key].dtype) if key in specs else np.asarray(value, object)
        for key, value in raw.items()
    }
    outputs = backend.predict(signature_name, columns)
    if "instances" in body:
        columns = {name: _json_output(value) for name, value in outputs.items()}
        return {"predictions": [{name: column[i] for name, column in columns.items()} for i in range(len(instances))]}
    return {"outputs": {name: _json_output(value) for name, value in outputs.items()}}


def _make_servicer(backend: SavedModelBackend, model_name: str):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            try:
                return self._predict(request)
            except ServingError as error:
                context.abort(getattr(grpc.StatusCode, str(error.code), grpc.StatusCode.INTERNAL), error.message)
            except Exception as error:  # noqa: BLE001 (a request must never stop the server)
                context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")

        def _predict(self, request):
            version = request.model_spec.version.value if request.model_spec.HasField("version") else None
            _check_model(backend, model_name, request.model_spec.name, version)
            signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
            columns = {name: _as_bytes(from_tensor_proto(proto)) for name, proto in request.inputs.items()}
            outputs = backend.predict(signature_name, columns)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = model_name
            response.model_spec.signature_name = signature_name
            response.model_spec.version.value = backend.version
            wanted = set(request.output_filter) or set(outputs)
            for name in wanted & set(outputs):
                response.outputs[name].CopyFrom(to_tensor_proto(outputs[name]))
            return response

    return PredictionServicer()


def _as_bytes(array: np.ndarray) -> np.ndarray:
    """Undo `from_tensor_proto`'s decoding of UTF-8 strings: the signature takes bytes."""
    if array.dtype != object:
        return array
    flat = [item.encode("utf-8") if isinstance(item, str) else item for item in array.reshape(-1)]
    result = np.empty(len(flat), object)
    result[:] = flat
    return result.reshape(array.shape)


def _check_model(backend: SavedModelBackend, model_name: str, name: str, version: int | None) -> None:
    if name != model_name or (version is not None and int(version) != backend.version):
        wanted = f"{name}" + (f" version {version}" if version is not None else "")
        raise ServingError(
            f"Servable not found for request: {wanted}. This server serves {model_name!r} version {backend.version}.",
            "NOT_FOUND",
        )


class _RestHandler(BaseHTTPRequestHandler):
    server_version = "mmkeras-loopback"

    def log_message(self, format, *args):
        """Keep test output quiet."""

    def _answer(self, status: int, body: Mapping) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(int(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self):
        match = REST_PATH.match(self.path)
        if not match:
            raise ServingError(f"Malformed request: {self.command} {self.path}", "NOT_FOUND")
        version = match.group("version")
        _check_model(self.server.backend, self.server.model_name, match.group("name"),
                     int(version) if version else None)
        return match

    def do_GET(self):
        try:
            if self._route().group("verb"):
                raise ServingError("Use POST for :predict.", "INVALID_ARGUMENT")
            version = self.server.backend.version
            self._answer(HTTPStatus.OK, {"model_version_status": [
                {"version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]})
        except ServingError as error:
            self._answer(HTTP_STATUS.get(error.code, HTTPStatus.INTERNAL_SERVER_ERROR), {"error": error.message})

    def do_POST(self):
        try:
            if not self._route().group("verb"):
                raise ServingError(f"Malformed request: POST {self.path}; use .../models/<name>:predict",
                                   "NOT_FOUND")
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except ValueError as error:
                raise ServingError(f"The body is not valid JSON: {error}", "INVALID_ARGUMENT") from None
            self._answer(HTTPStatus.OK, rest_predict(self.server.backend, body))
        except ServingError as error:
            self._answer(HTTP_STATUS.get(error.code, HTTPStatus.INTERNAL_SERVER_ERROR), {"error": error.message})
        except Exception as error:  # noqa: BLE001 (a request must never stop the server)
            self._answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(error).__name__}: {error}"})


class LoopbackServer:
    """Serve an exported model over TF Serving's gRPC and REST APIs on 127.0.0.1, in background threads.

    Use it where TF Serving is not installed: tests, notebooks, a quick demo
    of `mmkeras.serving.Client`. Ports default to free ones chosen by the OS.

    Args:
      path: a version folder from `export_for_serving`, or its model folder
        (the latest version is served).
      model_name: the name requests must use; default: the model folder's name.
      grpc_port: port for gRPC (0: any free port; None: no gRPC server).
      rest_port: port for REST (0: any free port; None: no REST server).
      host: the address to listen on.

    Example:
      >>> with LoopbackServer("saved_models/tiny_concat/1") as server:
      ...     client = Client(server.host, grpc_port=server.grpc_port, model_name=server.model_name)
      ...     client.predict({"caption": "a red ball", "picture": "red.png", "sound": ""})
    """

    def __init__(
        self,
        path: str | Path,
        model_name: str | None = None,
        *,
        grpc_port: int | None = 0,
        rest_port: int | None = 0,
        host: str = LOOPBACK,
    ):
        if grpc_port is None and rest_port is None:
            raise ValueError("LoopbackServer needs at least one of grpc_port and rest_port (0 picks a free port).")
        self.backend = SavedModelBackend(path)
        self.model_name = model_name or self.backend.path.parent.name
        self.host = host
        self.grpc_port = grpc_port
        self.rest_port = rest_port
        self._grpc_server = None
        self._http_server = None
        self._http_thread = None

    def start(self) -> LoopbackServer:
        """Start listening; `grpc_port` and `rest_port` then hold the bound ports."""
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        if self.grpc_port is not None:
            options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                       ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
            self._grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
            prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
                _make_servicer(self.backend, self.model_name), self._grpc_server
            )
            self.grpc_port = self._grpc_server.add_insecure_port(f"{self.host}:{self.grpc_port}")
            self._grpc_server.start()
        if self.rest_port is not None:
            self._http_server = ThreadingHTTPServer((self.host, self.rest_port), _RestHandler)
            self._http_server.daemon_threads = True
            self._http_server.backend = self.backend
            self._http_server.model_name = self.model_name
            self.rest_port = self._http_server.server_address[1]
            self._http_thread = threading.Thread(target=self._http_server.serve_forever, daemon=True)
            self._http_thread.start()
        return self

    def stop(self) -> None:
        """Stop both servers and free their ports."""
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_thread.join()
            self._http_server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def decompression_bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid PNG whose header declares width x height RGB pixels, with one small zlib stream of zeros.

    About 1 KB on the wire; decoding it in full would take width x height x 3
    bytes (1.2 GB for the default) and seconds of CPU.

    Example:
      >>> len(decompression_bomb_png())
      1096
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    rows = zlib.compress(b"\0" * (1 << 20), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def wav_header_only(seconds: float = 3600.0, sample_rate: int = 8000, tail_bytes: int = 1000) -> bytes:
    """A 16-bit mono WAV header declaring `seconds` of audio, followed by only `tail_bytes` of it.

    Example:
      >>> len(wav_header_only())
      1044
    """
    data_bytes = int(seconds * sample_rate) * 2
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    body = b"WAVE" + fmt + b"data" + struct.pack("<I", data_bytes)
    return b"RIFF" + struct.pack("<I", len(body) + data_bytes) + body + b"\0" * tail_bytes


def hostile_inputs(spec: Any, *, text_bytes: int = 10 * 1024 * 1024) -> dict[str, tuple[str, bytes]]:
    """Hostile values for a spec's features, one per kind: kind -> (feature name, value).

    "bomb png": a 20000 x 20000 PNG of about 1 KB, for the first image
    feature; "hour-long wav": a WAV header declaring one hour at the first
    audio feature's sample rate; "10 MB text": a text of `text_bytes` bytes,
    for the first text feature (a spec without one gets it as its first
    feature's value: text sent as an image or a recording). Put one in an
    otherwise good row: the export must refuse it with INVALID_ARGUMENT,
    quickly and without growing.

    Args:
      spec: the served model's `DatasetSpec`.
      text_bytes: the hostile text's length.

    Returns:
      A dict of kind -> (feature name, raw value), for the kinds the spec can receive.

    Example:
      >>> sorted(hostile_inputs(load_spec("tiny")))
      ['10 MB text', 'bomb png', 'hour-long wav']
    """
    first = {}
    for feature in spec.features:
        first.setdefault(feature.modality, feature)
    hostile = {}
    if "image" in first:
        hostile["bomb png"] = (first["image"].name, decompression_bomb_png())
    if "audio" in first:
        rate = int(first["audio"].options["sample_rate"])
        hostile["hour-long wav"] = (first["audio"].name, wav_header_only(3600.0, rate))
    text_feature = first.get("text", spec.features[0])
    # Bytes, not str: a client reads a str for a file input as a path.
    hostile["10 MB text"] = (text_feature.name, b"word " * (text_bytes // 5))
    return hostile


def main(argv: Sequence[str] | None = None) -> int:
    """Serve an export on 127.0.0.1 until stdin closes or SIGTERM/SIGINT; print the ports as one JSON line.

    Example:
      $ python -m mmkeras.serving._loopback saved_models/avmnist_concat
      {"pid": 4242, "grpc_port": 37401, "rest_port": 41877, "model_name": "avmnist_concat"}
    """
    parser = argparse.ArgumentParser(description="Serve an export with the loopback TF Serving stand-in.")
    parser.add_argument("path", help="a version folder from export_for_serving, or its model folder")
    parser.add_argument("--model-name", default=None, help="the name requests use (default: the model folder's)")
    parser.add_argument("--grpc-port", type=int, default=0, help="gRPC port (0: any free port)")
    parser.add_argument("--rest-port", type=int, default=0, help="REST port (0: any free port)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop.set())
    with LoopbackServer(args.path, args.model_name, grpc_port=args.grpc_port, rest_port=args.rest_port) as server:
        print(json.dumps({"pid": os.getpid(), "grpc_port": server.grpc_port, "rest_port": server.rest_port,
                          "model_name": server.model_name}), flush=True)
        # Also stop when the parent goes away (its end of stdin closes), so a crashed load test leaks no server.
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
