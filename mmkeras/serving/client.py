"""`Client`: ask a TF Serving model (REST or gRPC) from a dict, a list of dicts, a pandas row or file paths."""
from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np

from mmkeras.spec import load_spec
from mmkeras.wire import (
    DEFAULT_SIGNATURE,
    EXPLAIN_SIGNATURE,
    REST_FORMATS,
    ServingError,
    from_predict_response,
    from_rest_response,
    to_predict_request,
    to_rest_body,
)

PROTOCOLS = ("grpc", "rest")
# File extensions whose paths are read as bytes when no spec says which inputs are files.
FILE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".wav")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class Client:
    """Ask a model served by TF Serving (or `LoopbackServer`) for predictions.

    Speaks TF Serving's REST predict API (JSON; binary values as
    `{"b64": ...}`; "instances" or "inputs" form) and its gRPC
    `PredictionService.Predict` (protos from `tensorflow-serving-api`), and
    turns rows as a program holds them into the signature's inputs:

    - a row is a dict (or a pandas Series) of input name -> value; `predict`
      takes one row, a list of rows or a pandas DataFrame;
    - text is a `str`; images and recordings are `bytes`, an `os.PathLike`, or
      a `str` path (read from disk: with a `spec`, every image/audio value is
      a path; without one, a `str` ending in an image or WAV extension that
      names an existing file is); relative paths are resolved against `root`;
    - None, NaN and "" mean the modality is missing (an empty string on the wire,
      which `serving_default` reads as missing);
    - waveforms (numpy float arrays, for `serving_waveform`) are sent as
      float32 and flags (`<name>_present`) as bools.

    With a `spec`, manifest columns are renamed to feature names and columns
    the model does not take (label, split) are dropped, so manifest rows can be
    sent as they are.

    Args:
      host: the server's host name or address.
      rest_port: the REST port (TF Serving's default 8501), or None.
      grpc_port: the gRPC port (TF Serving's default 8500), or None.
      model_name: the served model's name (its folder under the base path).
      signature_name: the signature to run.
      model_version: a version to ask for, or None for the latest.
      spec: the model's `DatasetSpec` (or its name or path), to know which
        inputs are files and how manifest columns map to features.
      root: the folder relative file paths are read from (default: the
        current folder).
      timeout: seconds to wait for an answer.

    Raises:
      ValueError: if neither port is given.

    Example:
      >>> client = Client("localhost", grpc_port=8500, model_name="tiny_concat", spec="tiny")
      >>> client.predict({"caption": "a red ball", "picture": "images/00000.png", "sound": ""})["class_name"]
      array(['red'], dtype=object)
    """

    def __init__(
        self,
        host: str = "localhost",
        rest_port: int | None = None,
        grpc_port: int | None = None,
        *,
        model_name: str,
        signature_name: str = DEFAULT_SIGNATURE,
        model_version: int | None = None,
        spec: Any = None,
        root: str | os.PathLike | None = None,
        timeout: float = 30.0,
    ):
        if rest_port is None and grpc_port is None:
            raise ValueError("Client needs a rest_port (TF Serving: 8501) or a grpc_port (TF Serving: 8500).")
        if spec is not None and not hasattr(spec, "features"):
            spec = load_spec(spec)
        self.host = host
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self.model_name = model_name
        self.signature_name = signature_name
        self.model_version = model_version
        self.spec = spec
        self.root = Path(root) if root is not None else None
        self.timeout = float(timeout)
        self._channel = None
        self._stub = None

    def predict(
        self,
        rows: Any,
        *,
        protocol: str | None = None,
        rest_format: str = "instances",
        signature_name: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Send rows to the model and return its outputs.

        Args:
          rows: one row (dict or pandas Series), a list of rows, or a pandas DataFrame.
          protocol: "grpc" or "rest"; default gRPC when a gRPC port was given.
          rest_format: "instances" (row form) or "inputs" (columnar form), for REST.
          signature_name: overrides the client's signature for this call.

        Returns:
          Output name -> numpy array with one row per input row, e.g.
          `probabilities` (n, num_classes), `class_id` (n,), `class_name` (n,)
          (an object array of str).

        Raises:
          ServingError: if the server refuses the request; `code` holds the gRPC
            status or HTTP status and the message names the bad input.
          ValueError: for rows that cannot be turned into inputs.
          FileNotFoundError: for a file path that does not exist.
        """
        protocol = protocol or ("grpc" if self.grpc_port is not None else "rest")
        if protocol not in PROTOCOLS:
            raise ValueError(f"Unknown protocol {protocol!r}. Expected one of {list(PROTOCOLS)}.")
        if rest_format not in REST_FORMATS:
            raise ValueError(f"Unknown REST format {rest_format!r}. Expected one of {list(REST_FORMATS)}.")
        columns = self.columns(rows)
        signature_name = signature_name or self.signature_name
        if protocol == "grpc":
            return self._predict_grpc(columns, signature_name)
        return self._predict_rest(columns, signature_name, rest_format)

    def explain(self, rows: Any, *, protocol: str | None = None, rest_format: str = "instances") -> dict[str, np.ndarray]:
        """Ask the model's `serving_explain` signature which modality drove each prediction.

        Takes the same rows as `predict` with `serving_default` (an empty value
        marks a missing modality). The attribution of a modality is its
        occlusion score: the predicted class's probability minus its
        probability with that modality marked absent (as
        `mmkeras.explain(model, inputs, method="occlusion")`).

        Args:
          rows: one row, a list of rows or a pandas DataFrame (see `predict`).
          protocol: "grpc" or "rest"; default gRPC when a gRPC port was given.
          rest_format: "instances" or "inputs", for REST.

        Returns:
          `probabilities` (n, num_classes), `class_id` (n,), `class_name` (n,)
          and `<feature>_attribution` (n,) per feature.

        Raises:
          ServingError: if the server refuses the request, e.g. FAILED_PRECONDITION
            (HTTP 400) for a model exported before `serving_explain` existed.

        Example:
          >>> client.explain({"caption": "a red ball", "picture": "images/00000.png", "sound": ""})["picture_attribution"]
          array([0.41], dtype=float32)
        """
        return self.predict(rows, protocol=protocol, rest_format=rest_format, signature_name=EXPLAIN_SIGNATURE)

    def columns(self, rows: Any) -> dict[str, np.ndarray]:
        """Turn rows into request columns (input name -> numpy array), reading files; see the class docstring.

        Raises:
          ValueError: for rows of different inputs or values of mixed kinds.
        """
        records = _records(rows)
        if not records:
            raise ValueError("predict needs at least one row.")
        records = [self._rename(record) for record in records]
        names = list(records[0])
        for index, record in enumerate(records):
            if set(record) != set(names):
                raise ValueError(
                    f"Row {index} has inputs {sorted(record)} but row 0 has {sorted(names)}; every row needs the "
                    "same inputs (use None or '' for a missing modality)."
                )
        return {name: self._column(name, [record[name] for record in records]) for name in names}

    def _rename(self, record: Mapping[str, Any]) -> dict[str, Any]:
        if self.spec is None:
            return dict(record)
        kept = {}
        for feature in self.spec.features:
            for key in (feature.name, feature.column):
                if key in record:
                    kept[feature.name] = record[key]
                    break
            if feature.presence_key in record:
                kept[feature.presence_key] = record[feature.presence_key]
        return kept

    def _is_file_input(self, name: str, value: Any) -> bool:
        if self.spec is not None:
            modality = {f.name: f.modality for f in self.spec.features}.get(name)
            return modality in ("image", "audio")
        return (
            isinstance(value, str)
            and value.lower().endswith(FILE_EXTENSIONS)
            and self._resolve(value).is_file()
        )

    def _resolve(self, path: str | os.PathLike) -> Path:
        path = Path(path).expanduser()
        return path if path.is_absolute() or self.root is None else self.root / path

    def _column(self, name: str, values: list) -> np.ndarray:
        values = [self._value(name, value) for value in values]
        if all(isinstance(value, (str, bytes)) for value in values):
            column = np.empty(len(values), object)
            column[:] = values
            return column
        if all(isinstance(value, (bool, np.bool_)) for value in values):
            return np.array(values, dtype=bool)
        if all(isinstance(value, np.ndarray) and value.dtype.kind in "fiu" for value in values):
            try:
                return np.stack(values).astype(np.float32)
            except ValueError:
                raise ValueError(
                    f"Input {name!r}: waveforms in one request must have the same length; pad them with zeros."
                ) from None
        if all(isinstance(value, (int, float, np.number)) for value in values):
            return np.array(values, dtype=np.float32)
        kinds = sorted({type(value).__name__ for value in values})
        raise ValueError(
            f"Input {name!r} mixes values of kinds {kinds}; give text as str, files as paths or bytes, "
            "waveforms as float arrays and presence flags as bools."
        )

    def _value(self, name: str, value: Any) -> Any:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, (list, tuple)):
            value = np.asarray(value)
        if isinstance(value, np.ndarray):
            return value.astype(np.float32) if value.dtype.kind == "f" else value
        if isinstance(value, os.PathLike) or (isinstance(value, str) and value and self._is_file_input(name, value)):
            path = self._resolve(value)
            if not path.is_file():
                raise FileNotFoundError(
                    f"Input {name!r}: no file {str(path)!r}. Give an existing image/WAV path (relative paths are "
                    f"read from root={str(self.root or Path.cwd())!r}), its bytes, or '' when it is missing."
                )
            return path.read_bytes()
        if isinstance(value, (np.str_, np.bytes_)):
            return value.item()
        return value

    def _predict_rest(self, columns: dict, signature_name: str, rest_format: str) -> dict[str, np.ndarray]:
        if self.rest_port is None:
            raise ValueError("This client has no rest_port; pass rest_port= or use protocol='grpc'.")
        version = f"/versions/{int(self.model_version)}" if self.model_version is not None else ""
        url = f"http://{self.host}:{self.rest_port}/v1/models/{self.model_name}{version}:predict"
        data = json.dumps(to_rest_body(columns, signature_name, rest_format)).encode("utf-8")
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                body = json.loads(answer.read())
        except urllib.error.HTTPError as error:
            text = error.read().decode("utf-8", "replace")
            try:
                message = json.loads(text).get("error", text)
            except ValueError:
                message = text
            raise ServingError(message, error.code) from None
        except urllib.error.URLError as error:
            raise ConnectionError(f"Cannot reach the model server at {url}: {error.reason}") from None
        return from_rest_response(body)

    def _predict_grpc(self, columns: dict, signature_name: str) -> dict[str, np.ndarray]:
        import grpc

        if self.grpc_port is None:
            raise ValueError("This client has no grpc_port; pass grpc_port= or use protocol='rest'.")
        if self._stub is None:
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                       ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
            self._channel = grpc.insecure_channel(f"{self.host}:{self.grpc_port}", options=options)
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        request = to_predict_request(columns, self.model_name, signature_name, self.model_version)
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingError(error.details(), error.code().name) from None
        return from_predict_response(response)

    def close(self) -> None:
        """Close the gRPC channel, if one was opened."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _records(rows: Any) -> list[Mapping[str, Any]]:
    """One row, a list of rows or a pandas DataFrame as a list of mappings (pandas is duck-typed)."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # a DataFrame
        return rows.to_dict("records")
    if hasattr(rows, "to_dict") and hasattr(rows, "index"):  # a Series: one row
        return [rows.to_dict()]
    if isinstance(rows, Mapping):
        return [rows]
    if isinstance(rows, (list, tuple)) and all(isinstance(row, Mapping) or hasattr(row, "to_dict") for row in rows):
        return [row if isinstance(row, Mapping) else row.to_dict() for row in rows]
    raise ValueError(
        f"predict takes a row (a dict or pandas Series), a list of rows or a pandas DataFrame, got "
        f"{type(rows).__name__}."
    )
