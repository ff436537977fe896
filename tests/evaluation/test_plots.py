"""Plots: a training curve has a validation line and legend only when there was validation; an explanation
shows each input beside its map."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mmkeras.evaluation import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def curves(monkeypatch):
    """`plot_training_curves`, returning the figure it would save (a plain `Figure`, not held by pyplot)."""
    monkeypatch.setattr(plots, "_save", lambda figure, path: figure)
    return lambda history: plots.plot_training_curves(history, "unused.png")


@pytest.mark.parametrize("history", [
    {"epoch": [0, 1], "loss": [1.0, 0.5], "accuracy": [0.4, 0.6]},                      # fit without validation
    {"loss": [1.0, 0.5], "val_loss": [math.nan, math.nan]},                             # history.csv, empty cells
])
def test_training_curves_without_validation_have_no_validation_legend(history, curves):
    figure = curves(history)
    for axis in figure.axes:
        assert [line.get_label() for line in axis.get_lines()] == ["train"]
        assert axis.get_legend() is None
        assert axis.get_title().endswith("(training)")


def test_training_curves_with_validation_show_both_and_a_legend(curves):
    figure = curves({"loss": [1.0, 0.5, 0.4], "val_loss": [1.2, math.nan, 0.8]})
    (axis,) = figure.axes
    assert [line.get_label() for line in axis.get_lines()] == ["train", "validation"]
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["train", "validation"]
    assert axis.get_title() == "loss"


def test_training_curves_png_is_written(tmp_path):
    path = plots.plot_training_curves({"loss": [1.0, 0.5]}, tmp_path / "curves.png")
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_importing_the_plots_leaves_the_callers_backend_alone():
    # Notebooks show their own pyplot figures inline after calling mmkeras.evaluate.
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import mmkeras.evaluation.plots; "
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_explanation_shows_each_input_beside_its_map(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    inputs = {"picture": rng.integers(0, 255, (2, 8, 8, 3), dtype=np.uint8), "sound": rng.normal(size=(2, 400)),
              "caption": np.array([b"a red ball", b""], object), "caption_present": np.array([True, False])}
    explanation = {
        "features": ["caption", "picture", "sound"], "class_id": np.array([0, 2]), "probability": np.array([0.9, 0.6]),
        "scores": {"caption": np.array([0.5, 0.0]), "picture": np.array([0.3, 0.2]), "sound": np.array([-0.2, 0.1])},
        "maps": {"caption": np.array([[0.01, 0.5, -0.02, 0, 0], [0.0] * 5]), "picture": rng.normal(size=(2, 8, 8)),
                 "sound": rng.normal(size=(2, 5, 4))},
        "tokens": {"caption": np.array([["a", "red", "ball", "", ""], [""] * 5])},
    }
    path = plots.plot_explanation(inputs, explanation, tmp_path / "explanations.png", class_names=["r", "g", "b"])
    assert path.read_bytes().startswith(PNG_MAGIC)
    monkeypatch.setattr(plots, "_save", lambda figure, path: figure)
    figure = plots.plot_explanation(inputs, explanation, "unused.png", class_names=["r", "g", "b"], top_tokens=2)
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert titles[:5] == ["r (p=0.90)", "caption: top tokens", "picture", "picture map", "sound map"]
    tokens = next(axis for axis in figure.axes if axis.get_title() == "caption: top tokens")
    assert [label.get_text() for label in tokens.get_yticklabels()] == ["ball", "red"]  # top 2 by |score|, largest on top
    assert any(text.get_text() == "caption absent" for axis in figure.axes for text in axis.texts)
