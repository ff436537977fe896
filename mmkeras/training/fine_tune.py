"""Two-phase fine-tuning: train the head with the pretrained parts frozen, then unfreeze their top layers.

With little labelled data, a pretrained encoder (a hub encoder, an ImageNet
backbone) is best kept frozen while the freshly initialised head learns, so
that its large early gradients do not wreck the pretrained features; then the
top layers of the encoder are unfrozen and trained gently, at a lower learning
rate. Each phase is one `mmkeras.training.loop.train` run in its own folder:

    <output_dir>/head/        phase 1: pretrained parts frozen (the builders' default)
    <output_dir>/fine_tune/   phase 2: phase 1's weights, top layers unfrozen, lower learning rate

"Pretrained parts" are the layers the branch builders froze: every
`HubEncoder` and every keras.applications backbone with pretrained weights.
Batch normalisation layers stay frozen in phase 2 (in inference mode), as
Keras' transfer-learning guide advises: their statistics would otherwise be
re-estimated from a few small batches.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path
from typing import Any

import keras

from mmkeras.checks import check_number, check_positive_int
from mmkeras.models.common import leaf_layers
from mmkeras.spec import DatasetSpec, load_spec
from mmkeras.training.loop import TrainResult, train
from mmkeras.training.run_dir import RunPaths

HEAD_DIR = "head"
FINE_TUNE_DIR = "fine_tune"
# The hook `train` calls with the built classifier before compiling it (see `prepare_fine_tuning`).
TRAIN_HOOK = "prepare_model"


@dataclasses.dataclass(frozen=True)
class FineTuneResult:
    """What `fine_tune` returns.

    Attributes:
      model: the fine-tuned classifier (phase 2's model).
      head: phase 1's `TrainResult`, or None when a finished phase 1 in the
        same folder was reused.
      fine_tune: phase 2's `TrainResult`.
      unfrozen: names of the layers phase 2 trained inside the pretrained parts.
      output_dir: the folder holding both phases' run folders.
    """

    model: keras.Model
    head: TrainResult | None
    fine_tune: TrainResult
    unfrozen: tuple[str, ...]
    output_dir: Path


def fine_tune(
    spec: DatasetSpec | str | os.PathLike,
    *,
    head_epochs: int = 5,
    fine_tune_epochs: int = 5,
    unfreeze_top: int | None = None,
    fine_tune_learning_rate: float = 1e-5,
    output_dir: str | os.PathLike | None = None,
    **train_kwargs: Any,
) -> FineTuneResult:
    """Train a classifier with pretrained parts in two phases: head first, then the top of the encoders.

    Phase 1 is a plain `train` run (the builders freeze pretrained parts by
    default). Phase 2 is a second `train` run that starts from phase 1's final
    weights, unfreezes the top `unfreeze_top` layers of each pretrained part
    (`unfreeze_top_layers`) and trains everything trainable at
    `fine_tune_learning_rate`. Calling it again with the same `output_dir`
    reuses a finished phase 1 and resumes an unfinished phase 2.

    Args:
      spec: a `DatasetSpec`, or a spec's path or bundled name; its features
        (or `branch_options`) name the pretrained encoders, e.g.
        `branch_options={"caption": {"encoder": "hub:..."}}`.
      head_epochs: epochs of phase 1.
      fine_tune_epochs: epochs of phase 2.
      unfreeze_top: how many of the last weighted layers of each pretrained
        part to unfreeze (a `HubEncoder` counts as one layer); None unfreezes
        them all. Batch normalisation layers stay frozen.
      fine_tune_learning_rate: phase 2's learning rate (phase 1 uses
        `learning_rate` from `train_kwargs`, or the training default).
      output_dir: the folder for both runs; default `runs/<spec>-fine-tune-<time>`.
      **train_kwargs: anything else `train` takes (`fusion`, `batch_size`,
        `branch_options`, `seed`, `callbacks`, ...), used by both phases.

    Returns:
      A `FineTuneResult`.

    Raises:
      ValueError: for bad epochs, `unfreeze_top` or learning rate, for
        `epochs` among `train_kwargs`, or a model with no pretrained part.
      FileExistsError: if phase 2 in `output_dir` has already finished.

    Example:
      >>> result = fine_tune("tiny", head_epochs=3, fine_tune_epochs=2, unfreeze_top=2,
      ...                    branch_options={"picture": {"encoder": "hub:/models/image_encoder"}})
      >>> result.unfrozen
      ('hub_encoder',)
    """
    for value, name in ((head_epochs, "head_epochs"), (fine_tune_epochs, "fine_tune_epochs")):
        check_positive_int(value, name)
    _check_unfreeze_top(unfreeze_top)
    check_number(fine_tune_learning_rate, "fine_tune_learning_rate")
    if "epochs" in train_kwargs:
        raise ValueError("fine_tune takes `head_epochs` and `fine_tune_epochs` instead of `epochs`.")
    spec = spec if isinstance(spec, DatasetSpec) else load_spec(spec)
    if output_dir is None:
        output_dir = Path("runs") / f"{spec.name}-fine-tune-{time.strftime('%Y%m%d-%H%M%S')}"
    output_dir = Path(output_dir)
    head_paths = RunPaths(output_dir / HEAD_DIR)

    head = None
    if not head_paths.final_model.is_file():
        # Uncalibrated: phase 2 loads these weights into a classifier without a temperature layer.
        head = train(spec, epochs=head_epochs, output_dir=head_paths.run_dir, **{**train_kwargs, "calibrate": False})
    unfrozen: list[str] = []
    prepare = functools.partial(
        prepare_fine_tuning, weights=head_paths.final_model, unfreeze_top=unfreeze_top, unfrozen=unfrozen
    )
    tuned = train(
        spec, epochs=fine_tune_epochs, output_dir=output_dir / FINE_TUNE_DIR,
        **{**train_kwargs, "learning_rate": float(fine_tune_learning_rate), TRAIN_HOOK: prepare},
    )
    return FineTuneResult(
        model=tuned.model, head=head, fine_tune=tuned, unfrozen=tuple(unfrozen), output_dir=output_dir
    )


def prepare_fine_tuning(
    model: keras.Model,
    *,
    weights: str | os.PathLike,
    unfreeze_top: int | None = None,
    unfrozen: list[str] | None = None,
) -> list[str]:
    """Load phase 1's weights into a freshly built classifier and unfreeze the top of its pretrained parts.

    This is phase 2's `train(prepare_model=...)` hook; call it before compiling.

    Args:
      model: the classifier, built exactly as in phase 1.
      weights: phase 1's `final.keras` (or a `.weights.h5` file).
      unfreeze_top: see `unfreeze_top_layers`.
      unfrozen: optional list that receives the unfrozen layers' names.

    Returns:
      The names of the unfrozen layers.

    Raises:
      FileNotFoundError: if `weights` does not exist.
      ValueError: if the model has no pretrained (frozen) part.
    """
    if not Path(weights).is_file():
        raise FileNotFoundError(f"No weights file {str(weights)!r} to fine-tune from; run the head phase first.")
    model.load_weights(weights)
    names = unfreeze_top_layers(model, unfreeze_top)
    if unfrozen is not None:
        unfrozen[:] = names
    return names


def pretrained_parts(model: keras.Model) -> list[keras.layers.Layer]:
    """The frozen parts of a classifier that hold weights: its hub encoders and pretrained backbones.

    The walk goes down through trainable sub-models (the branches) and stops
    at each frozen layer or sub-model holding weights.

    Example:
      >>> [part.name for part in pretrained_parts(build_classifier(spec, branch_options=pretrained))]
      ['hub_encoder', 'MobileNetV3Small']
    """
    parts = []
    for layer in model.layers:
        if not layer.trainable and layer.weights:
            parts.append(layer)
        elif isinstance(layer, keras.Model):
            parts.extend(pretrained_parts(layer))
    return parts


def unfreeze_top_layers(model: keras.Model, unfreeze_top: int | None = None) -> list[str]:
    """Unfreeze the top `unfreeze_top` weighted layers of each pretrained part of `model`.

    A pretrained sub-model (a backbone) is unfrozen from its output end: its
    last `unfreeze_top` layers with weights, batch normalisation excepted,
    become trainable and the rest stay frozen. A single pretrained layer (a
    `HubEncoder`) counts as one layer. Recompile the model afterwards.

    Args:
      model: a classifier (or branch) holding frozen pretrained parts.
      unfreeze_top: layers to unfreeze per part; None unfreezes all but batch
        normalisation; 0 unfreezes nothing.

    Returns:
      The names of the unfrozen layers, parts in model order.

    Raises:
      ValueError: for a negative `unfreeze_top`, or a model without pretrained parts.

    Example:
      >>> unfreeze_top_layers(model, 1)
      ['hub_encoder']
    """
    _check_unfreeze_top(unfreeze_top)
    parts = pretrained_parts(model)
    if not parts:
        raise ValueError(
            f"Model {model.name!r} has no frozen pretrained part to fine-tune. Give a branch a pretrained encoder "
            "(encoder='hub:...') or backbone weights (weights='imagenet' or a file), which are frozen by default."
        )
    unfrozen = []
    for part in parts:
        if not isinstance(part, keras.Model):
            if unfreeze_top is None or unfreeze_top > 0:
                part.trainable = True
                unfrozen.append(part.name)
            continue
        candidates = [
            layer for layer in leaf_layers(part)
            if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
        ]
        chosen = candidates if unfreeze_top is None else candidates[max(len(candidates) - unfreeze_top, 0):]
        if not chosen:
            continue
        # Setting a model trainable sets every sub-layer; then refreeze all but the chosen ones.
        part.trainable = True
        chosen_ids = {id(layer) for layer in chosen}
        for layer in leaf_layers(part):
            layer.trainable = id(layer) in chosen_ids
        unfrozen.extend(layer.name for layer in chosen)
    return unfrozen


def _check_unfreeze_top(unfreeze_top) -> None:
    if unfreeze_top is not None:
        check_positive_int(unfreeze_top, "unfreeze_top", allow_zero=True, hint=" or None (all)")
