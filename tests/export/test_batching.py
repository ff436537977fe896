"""Batching parameters for TF Serving: chosen from a measured throughput curve, written next to models.config."""
from __future__ import annotations

import json
import time

import pytest
from export_helpers import build_small

from mmkeras.export import batching, export_for_serving, read_metadata


def parse_batching_parameters(text: str):
    """Parse the file with protobuf's text format into TF Serving's `BatchingParameters` message.

    The pip package of TF Serving's APIs lacks `session_bundle_config.proto`, so the message is declared
    here with the fields, numbers and types that proto gives it (`google.protobuf.Int64Value` wrappers).
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    proto = descriptor_pb2.FileDescriptorProto(
        name="session_bundle_config.proto", package="tensorflow.serving", dependency=[wrappers.name]
    )
    message = proto.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    wrapped = ["max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"]
    for number, name in enumerate(wrapped, start=1):
        message.field.add(name=name, number=number, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                          type_name=".google.protobuf.Int64Value")
    message.field.add(name="thread_pool_name", number=5, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                      type_name=".google.protobuf.StringValue")
    message.field.add(name="allowed_batch_sizes", number=6, type=field.TYPE_INT64, label=field.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    pool.Add(proto)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))
    return text_format.Parse(text, cls())


# Seconds per call at each batch size: throughput 250, 444, 727, 1000, 1067, 1103 examples/s.
CURVE = {1: 0.004, 2: 0.0045, 4: 0.0055, 8: 0.008, 16: 0.015, 32: 0.029}


def test_cpu_choice_follows_the_knee_and_the_guide():
    chosen = batching.choose_batching_parameters(CURVE, device_type="CPU", num_cores=4)
    # 90% of the best (1103/s) is 993/s: first reached at batch 8.
    assert chosen.max_batch_size == 8
    assert chosen.allowed_batch_sizes == (1, 2, 4, 8)
    assert chosen.batch_timeout_micros == 0  # guide, CPU-only: start at 0
    assert (chosen.num_batch_threads, chosen.max_enqueued_batches) == (4, 4)  # cores; online serving


def test_gpu_choice_waits_about_one_batch_within_one_to_ten_ms():
    chosen = batching.choose_batching_parameters(CURVE, device_type="GPU", num_cores=8)
    assert chosen.max_batch_size == 8 and chosen.batch_timeout_micros == 8000
    fast = batching.choose_batching_parameters({1: 1e-4, 64: 2e-4}, device_type="GPU", num_cores=8)
    assert (fast.max_batch_size, fast.batch_timeout_micros) == (64, 1000)
    with pytest.raises(ValueError, match="device_type"):
        batching.choose_batching_parameters(CURVE, device_type="TPU", num_cores=8)
    with pytest.raises(ValueError, match="positive seconds"):
        batching.choose_batching_parameters({}, device_type="CPU", num_cores=8)


def test_the_file_is_a_batching_parameters_text_proto_with_the_curve_in_comments():
    chosen = batching.choose_batching_parameters(CURVE, device_type="CPU", num_cores=2)
    text = batching.batching_parameters_text(chosen, title="toy version 1")
    parsed = parse_batching_parameters(text)
    assert parsed.max_batch_size.value == 8 and parsed.batch_timeout_micros.value == 0
    assert parsed.num_batch_threads.value == 2 and parsed.max_enqueued_batches.value == 2
    # TF Serving's rules: increasing sizes, the last one equal to max_batch_size.
    assert list(parsed.allowed_batch_sizes) == [1, 2, 4, 8]
    assert "#            8       1000.0           8.00" in text
    assert "toy version 1" in text and "CPU" in text


def test_the_curve_stops_once_throughput_is_flat(monkeypatch):
    clock, calls = [0.0], []
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])  # a fake clock: exact timings

    def fake_signature(**inputs):
        size = len(inputs["x"])
        calls.append(size)
        clock[0] += 0.001 * max(size, 8) / 8  # 1 ms up to batch 8, then linear: flat throughput
        return {}

    curve = batching.measure_throughput_curve(fake_signature, lambda size: {"x": [b""] * size},
                                              (1, 2, 4, 8, 16, 32, 64, 128), seconds_per_size=0.0)
    assert curve == pytest.approx({1: 0.001, 2: 0.001, 4: 0.001, 8: 0.001, 16: 0.002, 32: 0.004})
    assert calls.count(1) == 1 + batching.MIN_CALLS  # one untimed call, then the timed ones
    assert batching.choose_batching_parameters(curve, device_type="CPU", num_cores=1).max_batch_size == 8


def test_the_curve_keeps_to_its_time_budget(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])

    def fake_signature(**inputs):
        clock[0] += 0.02 + 0.004 * len(inputs["x"])  # throughput keeps rising by more than 5% per size
        return {}

    def measure(seconds_total):
        clock[0] = 0.0
        curve = batching.measure_throughput_curve(fake_signature, lambda size: {"x": [b""] * size},
                                                  batching.CURVE_BATCH_SIZES["CPU"], seconds_total=seconds_total)
        return list(curve), clock[0]

    assert measure(None) == ([1, 2, 4, 8, 16, 32, 64], pytest.approx(1.968))
    # 1 to 32 take 1.14 s; 64 would take 3 calls of 0.276 s, more than the 0.36 s left.
    assert measure(1.5) == ([1, 2, 4, 8, 16, 32], pytest.approx(1.14))
    # The first MIN_SIZES sizes are measured whatever the budget, with MIN_CALLS timed calls each.
    assert measure(0.001)[0] == list(batching.CURVE_BATCH_SIZES["CPU"][:batching.MIN_SIZES])


def test_every_export_writes_its_batching_parameters_next_to_models_config(exported):
    model_dir = exported.base_dir / "tiny_attention"
    text = (model_dir / batching.BATCHING_FILE).read_text()
    assert text == (exported.path / "assets.extra" / batching.BATCHING_FILE).read_text()
    parsed = parse_batching_parameters(text)
    assert list(parsed.allowed_batch_sizes)[-1] == parsed.max_batch_size.value >= 1
    assert parsed.num_batch_threads.value >= 1
    metadata = read_metadata(exported.path)
    assert metadata["batching"]["max_batch_size"] == parsed.max_batch_size.value
    assert set(metadata["batching"]["examples_per_second"]) >= {"1", "2", "4"}
    assert [f["limits"] for f in metadata["features"]] == [
        {"max_text_bytes": 65536}, {"max_image_pixels": 4032 * 3024}, {"max_audio_seconds": 30.0}
    ]
    readme = (model_dir / "README.md").read_text()
    assert ("--enable_batching --batching_parameters_file=/models/tiny_attention/batching_parameters.txt"
            in readme)
    assert "`max_image_pixels` | 12192768" in readme
    json.dumps(metadata)  # JSON-ready


def test_an_export_without_measuring_has_no_batching_file(tiny_spec, tmp_path):
    path = export_for_serving(build_small(tiny_spec, "concat"), tiny_spec, tmp_path, measure_batching=False)
    assert not (path.parent / batching.BATCHING_FILE).exists()
    assert read_metadata(path)["batching"] is None
    readme = (path.parent / "README.md").read_text()
    assert "--enable_batching" not in readme and "measure_batching=False" in readme
