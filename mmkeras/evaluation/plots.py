"""PNG plots of an evaluation: training curves, confusion matrix, reliance, attention weights."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

# Figures are made without pyplot: they only go to files (servers and CI have no display), and
# importing this module leaves the caller's backend alone, so a notebook still shows its own plots.
from matplotlib.figure import Figure


def plot_training_curves(history: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Plot every metric of a Keras history against the epoch, validation dashed.

    A metric gets a validation curve and a legend only when it was validated:
    a run without a validation split (or a history.csv whose `val_` cells are
    empty) shows the training curve alone, titled as such.

    Args:
      history: metric name -> per-epoch values (`History.history` or history.csv columns).
      path: the PNG to write.

    Returns:
      `path`.
    """
    names = sorted(name for name in history if not name.startswith("val_") and name not in ("epoch", "learning_rate"))
    figure = Figure(figsize=(4 * max(len(names), 1), 3))
    axes = figure.subplots(1, max(len(names), 1), squeeze=False)
    for axis, name in zip(axes[0], names):
        axis.plot(np.arange(1, len(history[name]) + 1), history[name], label="train")
        validation = np.asarray(history.get(f"val_{name}", []), dtype=float)
        if np.isfinite(validation).any():
            # Markers: with validation every few epochs the finite points are not joined by a line.
            axis.plot(np.arange(1, len(validation) + 1), validation, "--", marker=".", label="validation")
            axis.legend()
            axis.set(title=name)
        else:
            axis.set(title=f"{name} (training)")
        axis.set(xlabel="epoch")
    return _save(figure, path)


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Plot a confusion matrix, rows normalised to recall, with counts written in.

    Args:
      matrix: (C, C) counts, rows are true classes.
      class_names: class names in id order.
      path: the PNG to write.

    Returns:
      `path`.
    """
    size = max(4, 0.5 * len(class_names) + 2)
    figure = Figure(figsize=(size, size))
    axis = figure.subplots()
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    axis.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title="Confusion matrix")
    axis.set_xticklabels(class_names, rotation=90)
    axis.set_yticklabels(class_names)
    if len(class_names) <= 20:
        for (row, column), count in np.ndenumerate(matrix):
            colour = "white" if rates[row, column] > 0.5 else "black"
            axis.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=8)
    return _save(figure, path)


def plot_reliance(reliance: Mapping[str, Mapping[str, float]], full_accuracy: float, path: Path) -> Path:
    """Bar chart of accuracy with each modality absent and shuffled, against all inputs.

    Args:
      reliance: feature name -> {"absent": accuracy, "shuffled": accuracy}.
      full_accuracy: accuracy with every input.
      path: the PNG to write.

    Returns:
      `path`.
    """
    names = list(reliance)
    positions = np.arange(len(names))
    figure = Figure(figsize=(max(4, 1.5 * len(names) + 2), 3.5))
    axis = figure.subplots()
    axis.bar(positions - 0.2, [reliance[n]["absent"] for n in names], 0.4, label="absent")
    axis.bar(positions + 0.2, [reliance[n]["shuffled"] for n in names], 0.4, label="shuffled")
    axis.axhline(full_accuracy, color="black", linestyle="--", label="all inputs")
    axis.set(xticks=positions, ylabel="accuracy", ylim=(0, 1), title="Modality reliance")
    axis.set_xticklabels(names)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(figure, path)


def plot_modality_weights(weights: np.ndarray, labels: np.ndarray, feature_names: Sequence[str],
                          class_names: Sequence[str], path: Path) -> Path:
    """Mean attention weight of each modality, per true class.

    Args:
      weights: (n, M) per-example modality weights.
      labels: (n,) true class ids.
      feature_names: the M modality names.
      class_names: class names in id order.
      path: the PNG to write.

    Returns:
      `path`.
    """
    means = np.stack([
        weights[labels == k].mean(axis=0) if (labels == k).any() else np.zeros(weights.shape[1])
        for k in range(len(class_names))
    ])
    figure = Figure(figsize=(max(4, 0.5 * len(class_names) + 2), 3.5))
    axis = figure.subplots()
    bottom = np.zeros(len(class_names))
    for m, name in enumerate(feature_names):
        axis.bar(np.arange(len(class_names)), means[:, m], bottom=bottom, label=name)
        bottom += means[:, m]
    axis.set(xticks=np.arange(len(class_names)), ylabel="mean weight", ylim=(0, 1), title="Attention weights by class")
    axis.set_xticklabels(class_names, rotation=90)
    axis.legend()
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
