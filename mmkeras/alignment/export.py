"""Export each tower of a dual encoder as its own raw-input SavedModel, for TF Serving.

A tower is what a search service needs on its own: the text tower embeds
queries online while the image tower embedded the gallery offline. Each
export is written through the export archive the classifier export uses
(`mmkeras.export.archive`): a new integer version folder written into a
hidden temporary folder and renamed into place, never overwriting an
existing version, the same warm-up file, REST bodies, metadata file and
`models.config`; and raw inputs are decoded in the graph by
`mmkeras.data.decoders.decode_batch`, the training pipeline's own decoders.

Layout for a tower exported as `<name>`:

    base_dir/<name>/
      models.config                    TF Serving model_config_list (docker paths)
      1/  2/  ...
        saved_model.pb  variables/  assets/
        assets.extra/
          mmkeras_export.json          feature, modality, shapes, embed_dim, versions
          tf_serving_warmup_requests   PredictionLog records TF Serving replays on load
          request_instances.json       REST body, row ("instances") form
          request_inputs.json          REST body, columnar ("inputs") form

Before a version is renamed into place, its `serving_default` is run on the
example inputs and compared with the Keras tower (`check_tower_export`); a
version that disagrees beyond 1e-5 is never published.

Signatures (inputs named after the feature, outputs `{"embedding": (batch, embed_dim) float32}`):

- `serving_default`: (batch,) `tf.string`: the text, or the encoded image
  (PNG, JPEG, GIF, BMP), or the WAV file's bytes. An empty string is a
  missing value: it decodes to zeros and its embedding means nothing.
- `serving_decoded`: the decoded tensor the tower takes (strings, uint8
  images, float32 waveforms), for clients that decode themselves.
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mmkeras.alignment.dual_encoder import DualEncoder
from mmkeras.alignment.retrieval import embed
from mmkeras.data.decoders import decode_batch
from mmkeras.export import requests, warmup
from mmkeras.export.archive import (
    EXTRA_DIR,
    serving_name,
    write_metadata,
    write_model_config,
    write_new_version,
    write_new_versions,
    write_requests,
)
from mmkeras.export.check import ExportCheck, ExportSkewError
from mmkeras.export.signatures import DECODED, DEFAULT
from mmkeras.models.common import leaf_layers

EMBEDDING = "embedding"
# The largest |embedding difference| between the SavedModel and the Keras tower that an export may show.
TOLERANCE = 1e-5


def export_tower(
    encoder: DualEncoder,
    feature_name: str,
    base_dir: str | os.PathLike = "saved_models",
    name: str | None = None,
    version: int | None = None,
) -> Path:
    """Export one tower as a raw-input SavedModel in a new version folder.

    Args:
      encoder: a `DualEncoder`.
      feature_name: the tower to export.
      base_dir: the folder holding exported models.
      name: the serving name (folder and TF Serving model name); default
        `<encoder name without "_encoder">_<feature>_tower`.
      version: a positive integer; default one more than the highest existing version.

    Returns:
      The new version folder, `base_dir/<name>/<version>`.

    Raises:
      FileExistsError: if that version already exists (versions are never overwritten).
      ValueError: for an unknown tower, a bad name or a bad version.
      ExportSkewError: if the SavedModel's embeddings differ from the Keras
        tower's (nothing is published).

    Example:
      >>> path = export_tower(encoder, "caption", "saved_models")
      >>> loaded = tf.saved_model.load(str(path))
      >>> loaded.signatures["serving_default"](caption=tf.constant(["a red ball"]))["embedding"].shape
      TensorShape([1, 128])
    """
    encoder.get_tower(feature_name)  # raises for an unknown tower
    name = default_tower_name(encoder, feature_name) if name is None else name
    version_dir = write_new_version(base_dir, name, version, _tower_writer(encoder, feature_name, name))
    write_model_config(version_dir.parent, name)
    return version_dir


def _tower_writer(encoder: DualEncoder, feature_name: str, name: str):
    """`write(staging, version)` for `write_new_version`: a tower's SavedModel, metadata, requests, checked."""

    def write(staging: Path, version: int) -> None:
        write_tower_saved_model(encoder, feature_name, staging)
        _write_metadata(encoder, feature_name, staging, name=name, version=version)
        _write_requests(encoder, feature_name, staging, name=name)
        check_tower_export(encoder, feature_name, staging)

    return write


def export_towers(
    encoder: DualEncoder, base_dir: str | os.PathLike = "saved_models", version: int | None = None
) -> dict[str, Path]:
    """Export every tower of an encoder (see `export_tower`); returns feature name -> version folder.

    For a search service that embeds each modality on its own; every tower
    gets its default name (`default_tower_name`), so each is its own TF Serving
    model. Every tower is written and checked before any is published: the
    towers share one embedding space, so a failed export publishes none
    rather than a new version of one tower beside the old version of another.

    Args:
      encoder: a `DualEncoder`.
      base_dir: the folder holding exported models.
      version: the version of every tower; default: for each tower, one more
        than its highest existing version.

    Returns:
      Feature name -> the tower's new version folder, `base_dir/<name>/<version>`.

    Raises:
      FileExistsError: if a tower's version already exists (nothing is published).
      ValueError: for a bad version or tower name.
      ExportSkewError: if a tower's SavedModel disagrees with its Keras tower (nothing is published).

    Example:
      >>> sorted(export_towers(encoder, "saved_models"))
      ['caption', 'picture']
    """
    names = {feature: default_tower_name(encoder, feature) for feature in encoder.feature_names}
    folders = write_new_versions(
        base_dir, [(name, version, _tower_writer(encoder, feature, name)) for feature, name in names.items()]
    )
    for name in names.values():
        write_model_config(Path(base_dir) / name, name)
    return dict(zip(names, folders))


def default_tower_name(encoder: DualEncoder, feature_name: str) -> str:
    """`<encoder name without "_encoder">_<feature>_tower`, with unsafe characters replaced.

    Example:
      >>> default_tower_name(encoder, "caption")
      'tiny_picture_caption_caption_tower'
    """
    stem = encoder.name.removesuffix("_encoder")
    return serving_name(f"{stem}_{feature_name}_tower")


def write_tower_saved_model(encoder: DualEncoder, feature_name: str, path: str | os.PathLike) -> Path:
    """Write one tower's SavedModel (both signatures, no extras) into `path`.

    Args:
      encoder: the `DualEncoder`.
      feature_name: the tower.
      path: the folder to write (TF creates it).

    Returns:
      `path` as a `Path`.
    """
    tower = encoder.get_tower(feature_name)
    feature = encoder.spec.feature(feature_name)
    spec = encoder.spec.with_features([feature_name])
    archive = keras.export.ExportArchive()
    # Track the leaf layers (as the classifier export does): they hold the
    # variables and the text lookup tables, and tracking them is cheap.
    for layer in leaf_layers(tower):
        archive.track(layer)

    def embed_decoded(decoded):
        return {EMBEDDING: tf.cast(tower(decoded[feature_name], training=False), tf.float32)}

    decoded_spec = tf.TensorSpec((None, *feature.shape), tf.as_dtype(feature.dtype), name=feature_name)
    embed = archive.add_endpoint(DECODED, embed_decoded, input_signature=[{feature_name: decoded_spec}])

    def serve(raw):
        return embed({feature_name: decode_batch(spec, {feature_name: raw[feature_name]})[feature_name]})

    raw_spec = tf.TensorSpec((None,), tf.string, name=feature_name)
    archive.add_endpoint(DEFAULT, serve, input_signature=[{feature_name: raw_spec}])
    archive.write_out(str(path), verbose=False)
    return Path(path)


def check_tower_export(encoder: DualEncoder, feature_name: str, version_dir: str | os.PathLike,
                       values=None, *, tolerance: float = TOLERANCE) -> ExportCheck:
    """Compare a tower export's raw-input `serving_default` with the Keras tower on the same values.

    Args:
      encoder: the exported `DualEncoder`.
      feature_name: the tower.
      version_dir: the export's (staging or published) version folder.
      values: raw values to embed (text, image bytes, WAV bytes); default the
        example inputs written next to the export.
      tolerance: the largest |difference| allowed.

    Returns:
      An `ExportCheck` (it passed) whose `max_abs_diff` is the largest
      |difference| between the two embeddings.

    Raises:
      ExportSkewError: if it exceeds `tolerance`.

    Example:
      >>> check_tower_export(encoder, "caption", export_tower(encoder, "caption")).passed
      True
    """
    spec = encoder.spec.with_features([feature_name])
    if values is None:
        values = list(requests.example_columns(spec, DEFAULT, batch_size=2)[feature_name])
    served = tf.saved_model.load(str(version_dir)).signatures[DEFAULT](**{feature_name: tf.constant(values)})
    difference = float(np.max(np.abs(served[EMBEDDING].numpy() - embed(encoder, feature_name, values))))
    report = ExportCheck(path=Path(version_dir), split="example inputs", num_examples=len(values),
                         max_abs_diff=difference, diffs={DEFAULT: difference}, tolerance=float(tolerance))
    if not report.passed:
        raise ExportSkewError(
            f"The {feature_name!r} tower export in {version_dir} embeds raw inputs {difference:.3g} away from the "
            f"Keras tower (tolerance {tolerance:g}): the SavedModel's decoding or weights differ from training's.",
            report,
        )
    return report


def _write_requests(encoder: DualEncoder, feature_name: str, version_dir: Path, *, name: str) -> None:
    """The warm-up records and REST request bodies of a tower export, from synthetic example inputs."""
    spec = encoder.spec.with_features([feature_name])
    logs = [warmup.make_prediction_log(requests.example_columns(spec, DEFAULT, batch_size), name, DEFAULT)
            for batch_size in (1, 2)]
    write_requests(version_dir / EXTRA_DIR, logs, requests.example_columns(spec, DEFAULT, batch_size=2), DEFAULT)


def _write_metadata(encoder: DualEncoder, feature_name: str, version_dir: Path, *, name: str, version: int) -> Path:
    feature = encoder.spec.feature(feature_name)
    metadata = {
        "name": name,
        "version": version,
        "kind": "dual_encoder_tower",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "encoder": encoder.name,
        "spec": encoder.spec.name,
        "feature": {"name": feature.name, "modality": feature.modality, "decoded_shape": list(feature.shape),
                    "decoded_dtype": feature.dtype, "options": {k: _jsonable(v) for k, v in feature.options.items()}},
        "embed_dim": encoder.embed_dim,
        "temperature": encoder.temperature,
        "signatures": {DEFAULT: {feature.name: "string (batch,)"},
                       DECODED: {feature.name: f"{feature.dtype} (batch, {', '.join(map(str, feature.shape))})"}},
        "outputs": {EMBEDDING: f"float32 (batch, {encoder.embed_dim}), L2-normalised"},
    }
    return write_metadata(version_dir / EXTRA_DIR, metadata)


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


