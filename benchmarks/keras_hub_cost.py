"""What a real KerasHub preset costs: CLIP ViT-B/32's parameters, memory, FLOPs and CPU time per image.

Run `python benchmarks/keras_hub_cost.py [--batch-sizes 1 8] [--repeats 5]` or
`mmkeras bench keras_hub ...`. Nothing is downloaded: the backbone is built from
KerasHub's classes with the configuration of the `clip_vit_base_patch32` preset
(`CLIP_VIT_B32` below; its parameter count must equal the one KerasHub's preset
table publishes, which the script checks) and random weights, which cost the same
time and memory as the trained ones. It is saved to a local preset folder with
its image converter and loaded back through `mmkeras.KerasHubEncoder(folder,
modality="image")`, the layer an image branch and `build_zero_shot_classifier`
run, so the time per image is that of mmkeras' own path (converter: resize and
rescale; vision tower; projection). FLOPs are counted from the configuration
(2 x the multiply-adds of every matrix product: patch embedding, attention
projections, attention scores and mixing, MLP, projection; layer norms,
softmax and activations left out). Time: the median of `--repeats` timed calls
after two warm-up calls, per batch size. Printed and saved in
`benchmarks/results/keras_hub_cost.{json,md}`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PRESET = "clip_vit_base_patch32"
# KerasHub's clip_vit_base_patch32 (OpenAI's ViT-B/32 CLIP), as its config.json declares it.
CLIP_VIT_B32 = {
    "vision": {"patch_size": 32, "hidden_dim": 768, "num_layers": 12, "num_heads": 12, "intermediate_dim": 3072,
               "intermediate_activation": "quick_gelu", "image_shape": (224, 224, 3)},
    "text": {"vocabulary_size": 49408, "embedding_dim": 512, "hidden_dim": 512, "num_layers": 12, "num_heads": 8,
             "intermediate_dim": 2048, "intermediate_activation": "quick_gelu", "max_sequence_length": 77},
    "projection_dim": 512,
}


def transformer_flops(tokens: int, width: int, intermediate: int, layers: int) -> int:
    """2 x the multiply-adds of `layers` pre-norm transformer blocks on `tokens` tokens."""
    projections = 4 * tokens * width * width          # query, key, value, output
    attention = 2 * tokens * tokens * width           # scores and the weighted sum
    mlp = 2 * tokens * width * intermediate
    return 2 * layers * (projections + attention + mlp)


def vision_flops(config: dict) -> int:
    """FLOPs of one image through the vision tower and its projection."""
    vision = config["vision"]
    height, width, channels = vision["image_shape"]
    patches = (height // vision["patch_size"]) * (width // vision["patch_size"])
    embed = 2 * patches * vision["patch_size"] ** 2 * channels * vision["hidden_dim"]
    blocks = transformer_flops(patches + 1, vision["hidden_dim"], vision["intermediate_dim"], vision["num_layers"])
    return embed + blocks + 2 * vision["hidden_dim"] * config["projection_dim"]


def text_flops(config: dict) -> int:
    """FLOPs of one prompt (padded to the maximum length) through the text tower and its projection."""
    text = config["text"]
    blocks = transformer_flops(text["max_sequence_length"], text["hidden_dim"], text["intermediate_dim"],
                               text["num_layers"])
    return blocks + 2 * text["hidden_dim"] * config["projection_dim"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def measure(batch_sizes: list[int], repeats: int) -> dict:
    import keras_hub
    import numpy as np
    import tensorflow as tf

    from mmkeras.branches.kerashub import KerasHubEncoder
    from mmkeras.branches.kerashub.presets import _builtin_presets

    rss_start = peak_rss_mb()
    started = time.perf_counter()
    config = CLIP_VIT_B32
    backbone = keras_hub.models.CLIPBackbone(
        vision_encoder=keras_hub.models.CLIPVisionEncoder(**config["vision"]),
        text_encoder=keras_hub.models.CLIPTextEncoder(**config["text"]),
        projection_dim=config["projection_dim"],
    )
    build_seconds = time.perf_counter() - started
    published = _builtin_presets()[PRESET]["metadata"]["params"]
    parameters = backbone.count_params()
    if parameters != published:
        raise RuntimeError(f"The configuration gives {parameters} parameters, KerasHub publishes {published}.")
    vision_parameters = backbone.vision_encoder.count_params() + backbone.vision_projection.count_params()
    text_parameters = backbone.text_encoder.count_params() + backbone.text_projection.count_params()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        backbone.save_to_preset(folder)
        keras_hub.layers.CLIPImageConverter(image_size=config["vision"]["image_shape"][:2], scale=1 / 255.0,
                                            ).save_to_preset(folder)
        save_seconds = time.perf_counter() - started
        weights_mb = (Path(folder) / "model.weights.h5").stat().st_size / 2**20
        del backbone
        started = time.perf_counter()
        encoder = KerasHubEncoder(folder, modality="image")
        load_seconds = time.perf_counter() - started
    embed = tf.function(lambda images: encoder(images)["embedding"])
    timings = {}
    for batch_size in batch_sizes:
        images = tf.constant(np.random.default_rng(0).integers(0, 256, (batch_size, 224, 224, 3)), tf.uint8)
        for _ in range(2):
            embed(images).numpy()
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            embed(images).numpy()
            seconds.append(time.perf_counter() - started)
        timings[batch_size] = {"seconds_per_batch": round(statistics.median(seconds), 4),
                               "ms_per_image": round(1000 * statistics.median(seconds) / batch_size, 1)}
        print(f"batch {batch_size}: {timings[batch_size]['ms_per_image']} ms per image", file=sys.stderr, flush=True)
    return {
        "preset": PRESET,
        "config": config,
        "parameters": parameters,
        "parameters_published": published,
        "vision_parameters": vision_parameters,
        "text_parameters": text_parameters,
        "float32_weights_mb": round(parameters * 4 / 2**20, 1),
        "weights_file_mb": round(weights_mb, 1),
        "gflops_per_image": round(vision_flops(config) / 1e9, 2),
        "gflops_per_prompt": round(text_flops(config) / 1e9, 2),
        "build_seconds": round(build_seconds, 1),
        "save_seconds": round(save_seconds, 1),
        "load_seconds": round(load_seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 0),
        "rss_before_build_mb": round(rss_start, 0),
        "timings": timings,
    }


def format_markdown(report: dict) -> str:
    """The report as Markdown: sizes, FLOPs, and the time per image per batch size."""
    lines = [
        f"# KerasHub preset cost: {report['preset']}",
        "",
        (f"`{report['command']}`; {report['machine']}; TensorFlow {report['tensorflow']}, keras-hub "
         f"{report['keras_hub']}; random weights in the preset's configuration (no download), loaded through "
         f"`KerasHubEncoder(folder, modality=\"image\")`; float32; median of {report['repeats']} calls after 2 "
         f"warm-up calls. {report['date']}; load average at the end {report['load_average_at_end']} (a shared "
         "machine: an idle one is faster)."),
        "",
        "| figure | value |",
        "| --- | ---: |",
        f"| parameters (KerasHub publishes {report['parameters_published']:,}) | {report['parameters']:,} |",
        f"| of which vision tower + projection | {report['vision_parameters']:,} |",
        f"| of which text tower + projection | {report['text_parameters']:,} |",
        f"| float32 weights (MiB) | {report['float32_weights_mb']} |",
        f"| `model.weights.h5` in the preset folder (MiB) | {report['weights_file_mb']} |",
        f"| GFLOPs per 224x224 image (vision tower, counted) | {report['gflops_per_image']} |",
        f"| GFLOPs per 77-token prompt (text tower, counted) | {report['gflops_per_prompt']} |",
        f"| build from the classes (s) | {report['build_seconds']} |",
        f"| save_to_preset (s) | {report['save_seconds']} |",
        f"| load as `KerasHubEncoder` (s) | {report['load_seconds']} |",
        (f"| process peak memory, RSS (MiB; {report['rss_before_build_mb']:.0f} before building) "
         f"| {report['peak_rss_mb']:.0f} |"),
    ]
    lines += ["", "| batch | s per batch | ms per image |", "| ---: | ---: | ---: |"]
    for batch_size, timing in report["timings"].items():
        lines.append(f"| {batch_size} | {timing['seconds_per_batch']} | {timing['ms_per_image']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per batch size (default: 5)")
    parser.add_argument("--output-dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    import keras_hub
    import tensorflow as tf

    report = {
        "command": "python benchmarks/keras_hub_cost.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "tensorflow": tf.__version__,
        "keras_hub": keras_hub.__version__,
        "repeats": args.repeats,
        **measure(args.batch_sizes, args.repeats),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    markdown = format_markdown(report)
    print(markdown)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "keras_hub_cost.json").write_text(json.dumps(report, indent=2) + "\n")
    (output / "keras_hub_cost.md").write_text(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
