"""compare_fusions: seeds, rows and runs of a small comparison."""
from __future__ import annotations

import numpy as np
import pytest

from mmkeras.data import make_dataset
from mmkeras.evaluation.comparison import Candidate, compare_fusions, split_accuracy
from mmkeras.training.loop import train


@pytest.mark.slow
def test_compare_fusions_starts_at_first_seed(tiny_spec, tiny_model):
    candidate = Candidate("caption only", ("caption",), "concat", {"balance": "none", **tiny_model()})
    results = compare_fusions(tiny_spec, candidates=[candidate], seeds=1, first_seed=3, epochs=1, batch_size=16,
                              progress=False)
    assert [run["seed"] for run in results["runs"]] == [3]
    assert results["budget"]["first_seed"] == 3 and results["rows"][0]["seeds"] == 1
    # tiny has its own validation split: every run is scored on it, for choosing without the test split.
    assert 0.0 <= results["runs"][0]["validation_accuracy"] <= 1.0
    assert results["rows"][0]["validation_accuracy_mean"] == results["runs"][0]["validation_accuracy"]
    with pytest.raises(ValueError, match="first_seed"):
        compare_fusions(tiny_spec, candidates=[candidate], seeds=1, first_seed=-1, epochs=1, progress=False)


@pytest.mark.slow
def test_split_accuracy_counts_the_argmax_of_the_probabilities(tiny_spec, tiny_model, tmp_path):
    model = train(tiny_spec, epochs=1, batch_size=16, output_dir=tmp_path / "run", seed=0, verbose=0,
                  **tiny_model()).model
    right = total = 0
    for features, labels in make_dataset(tiny_spec, "validation", batch_size=7, deterministic=True):
        predicted = np.argmax(model.predict(features, verbose=0)["probabilities"], axis=1)
        right, total = right + int(np.sum(predicted == np.asarray(labels))), total + len(predicted)
    assert total == 15 and split_accuracy(model, tiny_spec, "validation") == pytest.approx(right / total)
