"""Plots: a training curve has a validation line and legend only when there was validation."""
from __future__ import annotations

import math

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
