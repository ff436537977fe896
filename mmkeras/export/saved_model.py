"""`export_for_serving`: a versioned TF SavedModel that takes raw inputs, for TF Serving.

Layout written for a model called `<name>` (TF Serving's base path is
`base_dir/<name>`; it serves the highest integer version it finds):

    base_dir/<name>/
      models.config            TF Serving model_config_list for this model (docker paths)
      batching_parameters.txt  TF Serving batching parameters, chosen from the latest version's
                               throughput curve measured on the exporting machine
      README.md                how to serve and query it (regenerated on each export)
      1/  2/  ...              one immutable folder per export
        saved_model.pb  variables/  assets/
        assets.extra/
          tf_serving_warmup_requests   PredictionLog records TF Serving replays on load
          request_instances.json       REST body, row ("instances") form
          request_inputs.json          REST body, columnar ("inputs") form
          saved_model_cli_inputs.npz   inputs for `saved_model_cli run --inputs`
          model.keras                  the Keras model, for `check_export`
          mmkeras_export.json          spec, classes, size limits, signatures, batching, versions, commands
          batching_parameters.txt      this version's batching parameters and throughput curve
          skew_check.json              what `check_export` measured before publishing (when run)

Each version is written into a hidden temporary folder next to the others
and renamed into place, so TF Serving (which polls the folder) never sees a
half-written version; an existing version is never overwritten.
"""
from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mmkeras.export import batching, requests, signatures, warmup
from mmkeras.export.archive import (
    DOCKER_MODELS_DIR,
    EXTRA_DIR,
    KERAS_MODEL_FILE,
    MODEL_CONFIG_FILE,
    REST_INSTANCES_FILE,
    serving_name,
    versions,
    write_metadata,
    write_model_config,
    write_new_version,
    write_requests,
    write_text_atomically,
)
from mmkeras.export.check import check_export
from mmkeras.models.common import leaf_layers
from mmkeras.spec import DatasetSpec, load_spec
from mmkeras.wire import resolve_version_dir

SKEW_CHECK_FILE = "skew_check.json"
CLI_INPUTS_FILE = "saved_model_cli_inputs.npz"


def export_for_serving(
    model: keras.Model,
    spec: DatasetSpec | str,
    base_dir: str | os.PathLike = "saved_models",
    name: str | None = None,
    version: int | None = None,
    *,
    check_split: str | None = None,
    check_examples: int = 64,
    measure_batching: bool = True,
) -> Path:
    """Export a classifier as a raw-input SavedModel for TF Serving, in a new version folder.

    The signatures decode raw inputs with the training pipeline's own decoders
    (see `mmkeras.export.signatures`): `serving_default` takes one `tf.string`
    per feature (text, image bytes, WAV bytes; an empty string = missing),
    `serving_with_presence` adds `<name>_present` flags, `serving_waveform`
    takes audio as float waveforms and `serving_decoded` the model's own
    inputs. Outputs: `probabilities`, `class_id`, `class_name` and, for
    fusions that weight modalities, `modality_weights`; `serving_explain`
    takes `serving_default`'s inputs and adds a `<feature>_attribution`
    occlusion score per modality (as `mmkeras.explain(..., "occlusion")`). The example requests,
    warm-up file, `models.config` and Keras model are written next to it.
    The decoders in the graph refuse inputs over the spec's size limits
    (`max_image_pixels`, `max_audio_seconds`, `max_text_bytes`, recorded in
    `mmkeras_export.json`) with INVALID_ARGUMENT before decoding them. With
    `measure_batching`, the SavedModel's throughput is measured at growing
    batch sizes (within `batching.TIME_BUDGET_SECONDS`, 1.5 s on CPU, plus
    ~1 s to load it) and `batching_parameters.txt` for TF Serving's
    `--enable_batching` is chosen from it (see `mmkeras.export.batching`).

    Args:
      model: a classifier from `build_classifier` (trained or not).
      spec: the spec the model was built for, or its name or YAML path.
      base_dir: the folder holding exported models.
      name: the model's serving name (its folder and TF Serving name);
        default: the model's name without "_classifier", prefixed with the
        spec's name if it lacks it (e.g. "tiny_concat").
      version: a positive integer version; default: one more than the
        highest existing version (1 for the first export).
      check_split: if given, run `check_export` on this split's first
        `check_examples` examples before the version is renamed into place, so
        that an export that disagrees with the training pipeline is never served.
      check_examples: how many examples that check compares.
      measure_batching: measure the throughput curve and write
        `batching_parameters.txt` (False: skip it, e.g. for a quick test export).

    Returns:
      The new version folder, `base_dir/<name>/<version>`.

    Raises:
      FileExistsError: if `base_dir/<name>/<version>` already exists.
      ValueError: for a bad name or version, or a model that does not fit the spec.
      ExportSkewError: if `check_split` is given and the check fails (nothing is written).

    Example:
      >>> path = export_for_serving(model, load_spec("tiny"), "saved_models")
      >>> path
      PosixPath('saved_models/tiny_concat/1')

      Serve it with TF Serving's docker image:

          docker run --rm -p 8500:8500 -p 8501:8501 \\
            -v "$PWD/saved_models/tiny_concat:/models/tiny_concat" tensorflow/serving \\
            --model_config_file=/models/tiny_concat/models.config \\
            --enable_batching --batching_parameters_file=/models/tiny_concat/batching_parameters.txt
    """
    if not isinstance(spec, DatasetSpec):
        spec = load_spec(spec)
    name = default_model_name(model, spec) if name is None else name

    def write(staging: Path, version: int) -> None:
        write_saved_model(model, spec, staging)
        parameters = batching.measure_batching(staging, spec) if measure_batching else None
        write_extras(model, spec, staging, name=name, version=version, batching_parameters=parameters)
        if check_split is not None:
            check = check_export(staging, spec, check_split, check_examples, model=model)
            (staging / EXTRA_DIR / SKEW_CHECK_FILE).write_text(json.dumps({
                "split": check.split, "num_examples": int(check.num_examples), "max_abs_diff": float(check.max_abs_diff),
                "tolerance": float(check.tolerance), "diffs": {key: float(value) for key, value in check.diffs.items()},
            }, indent=1))

    version_dir = write_new_version(base_dir, name, version, write)
    model_dir = version_dir.parent
    write_model_config(model_dir, name)
    write_model_batching_parameters(model_dir)
    write_readme(model_dir, name, spec)
    return version_dir


def default_model_name(model: keras.Model, spec: DatasetSpec) -> str:
    """The default serving name: the model's name without "_classifier", prefixed with the spec's name.

    Example:
      >>> default_model_name(build_classifier(spec, fusion="gated"), spec)
      'tiny_gated'
    """
    stem = re.sub(r"_classifier$", "", model.name)
    stem = serving_name(stem)
    return stem if stem.startswith(spec.name) else f"{spec.name}_{stem}"


def write_saved_model(model: keras.Model, spec: DatasetSpec, path: str | os.PathLike) -> Path:
    """Write the SavedModel with all serving signatures (no extras) into `path`.

    Args:
      model: the classifier.
      spec: its dataset spec.
      path: the folder to write (TF creates it).

    Returns:
      `path` as a `Path`.
    """
    archive = keras.export.ExportArchive()
    # Track the leaf layers, not the model: tracking walks every tracked object,
    # and a (sub-)model re-traces its whole call graph on each visit; the leaves
    # are enough to capture the lookup tables of TextVectorization layers.
    for layer in leaf_layers(model):
        archive.track(layer)
    # The model is traced once, in `serving_decoded`; the raw signatures call it.
    predict_decoded = archive.add_endpoint(
        signatures.DECODED,
        signatures.make_predict_decoded(model, spec),
        input_signature=[signatures.decoded_input_signature(spec)],
    )
    archive.add_endpoint(
        signatures.EXPLAIN,
        signatures.make_explain_signature(spec, predict_decoded),
        input_signature=[signatures.raw_input_signature(spec)],
    )
    for signature_name in signatures.signature_names(spec):
        if signature_name in (signatures.DECODED, signatures.EXPLAIN):
            continue
        waveform = signature_name == signatures.WAVEFORM
        archive.add_endpoint(
            signature_name,
            signatures.make_raw_signature(spec, predict_decoded, waveform=waveform),
            input_signature=[
                signatures.raw_input_signature(
                    spec, presence=signature_name != signatures.DEFAULT, waveform=waveform
                )
            ],
        )
    archive.write_out(str(path), verbose=False)
    return Path(path)


def write_extras(
    model: keras.Model,
    spec: DatasetSpec,
    version_dir: str | os.PathLike,
    *,
    name: str,
    version: int,
    batching_parameters: batching.BatchingParameters | None = None,
):
    """Write `assets.extra/` of a version: warm-up file, example requests, Keras model, metadata.

    Args:
      model: the exported classifier.
      spec: its dataset spec.
      version_dir: the (staging) version folder.
      name: the serving name.
      version: the version number.
      batching_parameters: the batching parameters measured for this version,
        written as `batching_parameters.txt` and into the metadata (None: neither).

    Returns:
      The `assets.extra` folder.
    """
    extra = Path(version_dir) / EXTRA_DIR
    extra.mkdir(parents=True, exist_ok=True)
    columns = requests.example_columns(spec, signatures.DEFAULT, batch_size=2)
    write_requests(extra, warmup.make_warmup_logs(spec, name), columns, signatures.DEFAULT)
    # Object arrays of bytes: numpy's fixed-width bytes would drop trailing NULs of WAV data.
    np.savez(extra / CLI_INPUTS_FILE, **{
        key: np.array([v.encode("utf-8") if isinstance(v, str) else v for v in values], object)
        for key, values in columns.items()
    })
    model.save(extra / KERAS_MODEL_FILE)
    metadata = {
        "name": name,
        "version": version,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "spec": {"name": spec.name, "path": str(spec.path) if spec.path else None},
        "features": [
            {"name": f.name, "modality": f.modality, "decoded_shape": list(f.shape), "decoded_dtype": f.dtype,
             "limits": {f.limit[0]: f.limit[1]}}
            for f in spec.features
        ],
        "class_names": list(spec.label.class_names),
        "keras_model": KERAS_MODEL_FILE,
        "signatures": {
            name_: sorted(_signature_inputs(spec, name_)) for name_ in signatures.signature_names(spec)
        },
        "saved_model_cli": cli_run_command(spec, "."),
        "batching": batching_parameters.to_dict() if batching_parameters else None,
    }
    write_metadata(extra, metadata)
    if batching_parameters is not None:
        batching.write_batching_parameters(
            extra / batching.BATCHING_FILE, batching_parameters, title=f"{name} version {version}"
        )
    return extra


def _signature_inputs(spec: DatasetSpec, signature_name: str) -> dict:
    if signature_name == signatures.DECODED:
        return signatures.decoded_input_signature(spec)
    return signatures.raw_input_signature(
        spec, presence=signature_name not in (signatures.DEFAULT, signatures.EXPLAIN),
        waveform=signature_name == signatures.WAVEFORM,
    )


def _describe_input(name: str, tensor_spec: tf.TensorSpec) -> str:
    """E.g. "`picture` uint8 (batch, 16, 16, 3)"."""
    dims = ", ".join("batch" if i == 0 else ("n" if d is None else str(d)) for i, d in enumerate(tensor_spec.shape))
    return f"`{name}` {tensor_spec.dtype.name} ({dims})"


def cli_run_command(spec: DatasetSpec, version_dir: str | os.PathLike) -> str:
    """The `saved_model_cli run` command that runs `serving_default` on the example inputs.

    Example:
      >>> cli_run_command(spec, "saved_models/tiny_concat/1")
      'saved_model_cli run --dir saved_models/tiny_concat/1 --tag_set serve --signature_def serving_default ...'
    """
    inputs_file = Path(version_dir) / EXTRA_DIR / CLI_INPUTS_FILE
    inputs = ";".join(f"{f.name}={inputs_file}[{f.name}]" for f in spec.features)
    return (
        f"saved_model_cli run --dir {version_dir} --tag_set serve --signature_def {signatures.DEFAULT} "
        f"--inputs '{inputs}'"
    )


def write_model_batching_parameters(model_dir: str | os.PathLike) -> Path | None:
    """Copy the latest version's `batching_parameters.txt` to `model_dir/` (next to `models.config`).

    TF Serving takes one batching file per server and serves the latest
    version, so the model folder holds that version's parameters.

    Args:
      model_dir: a model folder, `base_dir/<name>`.

    Returns:
      The written path, or None if the latest version has no batching file
      (exported with `measure_batching=False`); a stale model-level file is then removed.
    """
    model_dir = Path(model_dir)
    path = model_dir / batching.BATCHING_FILE
    source = resolve_version_dir(model_dir) / EXTRA_DIR / batching.BATCHING_FILE
    if not source.is_file():
        path.unlink(missing_ok=True)
        return None
    return write_text_atomically(path, source.read_text(encoding="utf-8"))


def write_readme(model_dir: str | os.PathLike, name: str, spec: DatasetSpec) -> Path:
    """Write `model_dir/README.md`: the versions, signatures and the commands that serve and query them."""
    model_dir = Path(model_dir)
    latest = versions(model_dir)[-1]
    rows = "\n".join(
        f"| `{name_}` | {', '.join(_describe_input(k, v) for k, v in _signature_inputs(spec, name_).items())} |"
        for name_ in signatures.signature_names(spec)
    )
    limits = "\n".join(f"| `{f.name}` | {f.modality} | `{f.limit[0]}` | {f.limit[1]:.10g} |" for f in spec.features)
    batching_flags = ""
    if (model_dir / batching.BATCHING_FILE).is_file():
        batching_flags = (
            " \\\n      --enable_batching "
            f"--batching_parameters_file={DOCKER_MODELS_DIR}/{name}/{batching.BATCHING_FILE}"
        )
    text = f"""# {name}

Exported by mmkeras from the `{spec.name}` spec; versions {versions(model_dir)} (TF Serving serves the
latest, {latest}). Classes: {', '.join(spec.label.class_names)}.

## Serve it (TF Serving's docker image; gRPC on 8500, REST on 8501)

    docker run --rm -p 8500:8500 -p 8501:8501 \\
      -v "{model_dir.resolve()}:{DOCKER_MODELS_DIR}/{name}" tensorflow/serving \\
      --model_config_file={DOCKER_MODELS_DIR}/{name}/{MODEL_CONFIG_FILE}{batching_flags}

{_batching_note(model_dir)}

## Query it (from this folder)

    curl -d @{latest}/{EXTRA_DIR}/{REST_INSTANCES_FILE} http://localhost:8501/v1/models/{name}:predict

    from mmkeras.serving import Client
    client = Client("localhost", grpc_port=8500, model_name="{name}", spec="{spec.name}")
    client.predict({{...one value per feature: text, or an image/WAV file path...}})

Inputs are named after the features; images and WAV recordings are sent as their file bytes
(`{{"b64": ...}}` in JSON), and an empty string marks a missing modality in `serving_default`.

| signature | inputs |
|---|---|
{rows}

Outputs: `probabilities`, `class_id`, `class_name` (and `modality_weights` for attention fusions);
`serving_explain` adds `<feature>_attribution`, each modality's occlusion score (the predicted class's
probability minus its probability with that modality marked absent).

Size limits (from the spec, the same in training): an input that declares more is refused with
INVALID_ARGUMENT naming the feature, the declared size and the option, before it is decoded.

| feature | modality | option | limit |
|---|---|---|---|
{limits}

## Run it without a server

    saved_model_cli show --dir {latest} --all
    cd {latest} && {cli_run_command(spec, ".")}
"""
    return write_text_atomically(model_dir / "README.md", text)


def _batching_note(model_dir: Path) -> str:
    path = model_dir / batching.BATCHING_FILE
    if not path.is_file():
        return ("No `batching_parameters.txt`: the latest version was exported with `measure_batching=False`; "
                "export again to measure it.")
    values = dict(re.findall(r"^(\w+) \{ value: (\d+) \}", path.read_text(encoding="utf-8"), re.MULTILINE))
    return (
        f"`{batching.BATCHING_FILE}` was chosen from this model's throughput curve on the exporting machine "
        f"(max_batch_size {values.get('max_batch_size')}, batch_timeout_micros "
        f"{values.get('batch_timeout_micros')}, num_batch_threads {values.get('num_batch_threads')}); its comments "
        "hold the curve and the reasons. On another machine, re-measure with "
        "`mmkeras.export.batching.measure_batching` or start from TF Serving's batching guide."
    )
