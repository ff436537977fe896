"""PNG plots of an evaluation: training curves, confusion matrix, reliance, attention weights, reliability, explanations."""
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
                          class_names: Sequence[str], path: Path, *,
                          title: str = "Attention weights by class", ylabel: str = "mean weight") -> Path:
    """Mean attention weight (or attribution share) of each modality, per true class, stacked.

    Args:
      weights: (n, M) per-example modality weights or shares (rows sum to 1).
      labels: (n,) true class ids.
      feature_names: the M modality names.
      class_names: class names in id order.
      path: the PNG to write.
      title: the figure's title.
      ylabel: the y axis label.

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
    axis.set(xticks=np.arange(len(class_names)), ylabel=ylabel, ylim=(0, 1), title=title)
    axis.set_xticklabels(class_names, rotation=90)
    axis.legend()
    return _save(figure, path)


def plot_reliability(patterns: Mapping[str, Mapping[str, Mapping | None]], path: Path) -> Path:
    """Reliability diagrams, one panel per presence pattern: accuracy against confidence, before and after.

    Each point is one non-empty confidence bin of `calibration_metrics`; a
    calibrated model's points lie on the diagonal. The legend gives each
    curve's expected calibration error.

    Args:
      patterns: pattern name -> {"before": metrics, "after": metrics or None}
        (the "patterns" of `calibration_report`).
      path: the PNG to write.

    Returns:
      `path`.
    """
    names = list(patterns)
    figure = Figure(figsize=(3.2 * len(names), 3.4))
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    for axis, name in zip(axes, names):
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for stage, style in (("before", "o-"), ("after", "s--")):
            metrics = patterns[name][stage]
            if metrics is None:
                continue
            bins = metrics["bins"]
            points = [(c, a) for c, a in zip(bins["confidence"], bins["accuracy"]) if c is not None]
            axis.plot(*zip(*points), style, markersize=4, label=f"{stage} (ECE {metrics['ece']:.3f})")
        axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=name)
        axis.legend(fontsize=7, loc="upper left")
    return _save(figure, path)


def plot_explanation(inputs: Mapping[str, np.ndarray], explanation: Mapping, path: Path, *,
                     examples: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
                     top_tokens: int = 6) -> Path:
    """Draw explained examples, one row each: the modality shares, then each input beside its map.

    Reads the result of `mmkeras.explain(..., method="integrated_gradients")`:
    the shares are |score| / sum of |scores| over modalities; a picture is
    shown beside its pixel map, a text as its `top_tokens` tokens by |score|,
    a sound as its log-mel map (frames across, mel bins up) with the
    per-frame total drawn over it. Maps are red where they raise the
    predicted class's probability and blue where they lower it, on a scale
    symmetric about 0 per panel. A modality flagged absent says so.

    Args:
      inputs: the batch that was explained (decoded, as `make_dataset` yields it).
      explanation: `explain`'s result for that batch.
      path: the PNG to write.
      examples: the row indices to draw; default every example (keep it to a few).
      class_names: class names in id order, for the titles; default the ids.
      top_tokens: tokens shown per text.

    Returns:
      `path`.

    Example:
      >>> batch, labels = next(iter(make_dataset(spec, "test", batch_size=4, training=False)))
      >>> plot_explanation(batch, explain(model, batch), Path("explanations.png"), class_names=spec.label.class_names)
      PosixPath('explanations.png')
    """
    names = list(explanation["features"])
    mapped = [name for name in names if name in explanation["maps"]]
    rows = list(range(len(explanation["class_id"]))) if examples is None else list(examples)
    columns = 1 + sum(2 if np.ndim(inputs[name]) == 4 else 1 for name in mapped)
    figure = Figure(figsize=(2.6 * columns, 2.2 * len(rows)))
    axes = figure.subplots(len(rows), columns, squeeze=False)
    scores = np.abs(np.stack([np.asarray(explanation["scores"][name]) for name in names], axis=1))
    shares = scores / np.maximum(scores.sum(axis=1, keepdims=True), 1e-12)
    for row, index in zip(axes, rows):
        class_id = int(explanation["class_id"][index])
        predicted = class_names[class_id] if class_names is not None else str(class_id)
        row[0].barh(names[::-1], shares[index][::-1])
        row[0].set(xlim=(0, 1), title=f"{predicted} (p={explanation['probability'][index]:.2f})", xlabel="share")
        panels = iter(row[1:])
        for name in mapped:
            values = np.asarray(inputs[name])
            is_image = values.ndim == 4
            element_map = np.asarray(explanation["maps"][name])[index]
            present = bool(np.asarray(inputs.get(f"{name}_present", np.ones(len(shares), bool)))[index])
            if is_image:
                axis = next(panels)
                picture = values[index]
                axis.imshow(picture.squeeze(), cmap="gray" if picture.shape[-1] == 1 else None)
                axis.set(title=name)
                axis.axis("off")
            axis = next(panels)
            if not present:
                axis.text(0.5, 0.5, f"{name} absent", ha="center", va="center", transform=axis.transAxes)
                axis.axis("off")
            elif name in explanation.get("tokens", {}):
                _plot_tokens(axis, explanation["tokens"][name][index], element_map, top_tokens)
                axis.set(title=f"{name}: top tokens")
            elif is_image:
                _plot_map(axis, element_map)
                axis.set(title=f"{name} map")
                axis.axis("off")
            else:
                _plot_map(axis, element_map.reshape(len(element_map), -1).T, origin="lower", aspect="auto")
                frames = axis.twinx()
                frames.plot(element_map.reshape(len(element_map), -1).sum(axis=1), color="black", linewidth=1)
                frames.set_yticks([])
                axis.set(title=f"{name} map", xlabel="frame", yticks=[])
    return _save(figure, path)


def _plot_map(axis, element_map: np.ndarray, **options) -> None:
    limit = max(float(np.abs(element_map).max()), 1e-12)
    axis.imshow(element_map, cmap="RdBu_r", vmin=-limit, vmax=limit, **options)


def _plot_tokens(axis, tokens: np.ndarray, scores: np.ndarray, top: int) -> None:
    order = [i for i in np.argsort(-np.abs(scores)) if tokens[i]][:top][::-1]
    axis.barh(np.arange(len(order)), scores[order], color=["tab:red" if scores[i] > 0 else "tab:blue" for i in order])
    axis.set_yticks(np.arange(len(order)))
    axis.set_yticklabels([str(tokens[i]) for i in order])
    axis.axvline(0, color="grey", linewidth=0.5)


def _save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
