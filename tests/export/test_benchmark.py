"""benchmark_serving: raw-input and pre-decoded timings of a loaded SavedModel, and their report."""
from __future__ import annotations

from mmkeras.export.benchmark import benchmark_serving, format_markdown


def test_benchmark_times_raw_and_decoded_calls(exported):
    figures = benchmark_serving(exported.path, exported.spec, latency_calls=6, throughput_batch_size=8,
                                throughput_calls=2, warmup_calls=2)
    for kind in ("raw", "decoded"):
        assert 0 < figures[kind]["p50_ms"] <= figures[kind]["p99_ms"]
        assert figures[kind]["examples_per_second"] > 0
    assert figures["raw_over_decoded_p50"] == figures["raw"]["p50_ms"] / figures["decoded"]["p50_ms"]
    assert "split 'test'" in figures["examples"] and figures["batch_size"] == 8
    assert "picture (encoded image bytes)" in figures["raw_inputs"]
    report = format_markdown({**figures, "dataset": "tiny", "fusion": "attention"})
    assert "| `serving_decoded` (pre-decoded tensors) |" in report and "examples/s (batch 8)" in report
