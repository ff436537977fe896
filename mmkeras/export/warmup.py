"""TF Serving warm-up requests: `assets.extra/tf_serving_warmup_requests`.

TF Serving replays the `PredictionLog` records of this TFRecord file when it
loads a model version, before the version takes traffic, so that the first
real requests do not pay for lazy initialisation (graph optimisation, kernel
selection, lookup-table set-up). See
https://www.tensorflow.org/tfx/serving/saved_model_warmup .
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf

from mmkeras.export import requests, signatures
from mmkeras.spec import DatasetSpec
from mmkeras.wire import to_predict_request

WARMUP_FILE = "tf_serving_warmup_requests"
# TF Serving replays at most this many warm-up records.
MAX_WARMUP_RECORDS = 1000


def make_prediction_log(columns: Mapping[str, np.ndarray], model_name: str, signature_name: str):
    """Wrap one request's columns in a `PredictionLog` (from `tensorflow-serving-api`).

    A warm-up record is a logged `PredictRequest`, built by `to_predict_request`
    exactly as a client's request would be.

    Args:
      columns: input name -> array with one row per example.
      model_name: the model's serving name.
      signature_name: the signature the request runs.

    Returns:
      A `tensorflow_serving.apis.prediction_log_pb2.PredictionLog`.

    Example:
      >>> log = make_prediction_log({"caption": np.array(["hi"], object)}, "tiny_concat", "serving_default")
      >>> log.predict_log.request.model_spec.name
      'tiny_concat'
    """
    from tensorflow_serving.apis import prediction_log_pb2

    request = to_predict_request(columns, model_name, signature_name)
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def write_warmup_file(path: str | Path, logs: Iterable) -> Path:
    """Write `PredictionLog` records as the TFRecord file TF Serving replays.

    Exports call it on each version's `assets.extra/` before the version is
    renamed into place, so TF Serving warms up every version it loads.

    Args:
      path: the file to write (`<version>/assets.extra/tf_serving_warmup_requests`).
      logs: `PredictionLog` protos.

    Returns:
      The file's path.

    Raises:
      ValueError: if there are no records or more than TF Serving replays.

    Example:
      >>> write_warmup_file(extra / WARMUP_FILE, make_warmup_logs(spec, "tiny_concat"))
      PosixPath('.../assets.extra/tf_serving_warmup_requests')
    """
    logs = list(logs)
    if not 0 < len(logs) <= MAX_WARMUP_RECORDS:
        raise ValueError(f"A warm-up file holds 1 to {MAX_WARMUP_RECORDS} records, got {len(logs)}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def make_warmup_logs(spec: DatasetSpec, model_name: str, batch_sizes: tuple[int, ...] = (1, 2)) -> list:
    """Warm-up records for every signature of an export of `spec`, at each batch size.

    Example:
      >>> len(make_warmup_logs(load_spec("tiny"), "tiny_concat"))  # 5 signatures x 2 batch sizes
      10
    """
    return [
        make_prediction_log(requests.example_columns(spec, name, batch_size), model_name, name)
        for name in signatures.signature_names(spec)
        for batch_size in batch_sizes
    ]


def read_warmup_file(path: str | Path) -> list:
    """Parse a warm-up file back into its `PredictionLog` records (for checks and tests).

    Args:
      path: a `tf_serving_warmup_requests` file.

    Returns:
      The `PredictionLog` protos, in file order.

    Raises:
      tf.errors.NotFoundError: if the file does not exist.
      google.protobuf.message.DecodeError: if a record is not a `PredictionLog`.

    Example:
      >>> len(read_warmup_file("saved_models/tiny_concat/1/assets.extra/tf_serving_warmup_requests"))
      8
    """
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for record in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs
