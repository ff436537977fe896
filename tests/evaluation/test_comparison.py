"""compare_fusions: seeds, rows and runs of a small comparison."""
from __future__ import annotations

import pytest

from mmkeras.evaluation.comparison import Candidate, compare_fusions


@pytest.mark.slow
def test_compare_fusions_starts_at_first_seed(tiny_spec, tiny_model):
    candidate = Candidate("caption only", ("caption",), "concat", {"balance": "none", **tiny_model()})
    results = compare_fusions(tiny_spec, candidates=[candidate], seeds=1, first_seed=3, epochs=1, batch_size=16,
                              progress=False)
    assert [run["seed"] for run in results["runs"]] == [3]
    assert results["budget"]["first_seed"] == 3 and results["rows"][0]["seeds"] == 1
    with pytest.raises(ValueError, match="first_seed"):
        compare_fusions(tiny_spec, candidates=[candidate], seeds=1, first_seed=-1, epochs=1, progress=False)
