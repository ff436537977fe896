"""Time to accuracy: mmkeras' defaults against a plain hand-written Keras model, in one process.

For each dataset and seed it trains, side by side on the same data and batch size:
- "mmkeras defaults": `mmkeras.train(spec)` as a user runs it (fed from the manifest), in a
  fresh Python process whose start-up (imports, TF, data checks) counts in its time, as a
  user's command pays it;
- "mmkeras before": with `--before-checkout DIR` (a checkout of commit 4668abf, the
  code issue 14 was filed against: `git worktree add --detach DIR 4668abf`), that
  code's `mmkeras.train` with its own defaults, in a fresh process too, so that
  before and after are measured on the same machine on the same day. Without it,
  today's `mmkeras.train` with the options that
  reproduce that commit's model (`BEFORE_OPTIONS`: image stages (32, 64, 128) x 2
  convolutions at full resolution, learning rate 1e-3, Keras' own AdamW, 10 ms audio
  hops); it then shares today's trainer (the first step traced once, the cond-free
  schedule), so it understates the change a user sees;
- "plain Keras": two convolutions + global pooling for each image, one LSTM over a
  log-mel spectrogram for each clip (an embedding + LSTM for each text),
  concatenation, Adam; written here, fed from memory, trained in this process (its
  start-up: this process's imports plus the dataset's preparation).
After every epoch a probe measures test accuracy; its own time is not counted. Per
model it reports the wall time from process start (imports and data preparation
included) until the test accuracy first
reaches the logistic-regression early-fusion floor and 0.85, the first-epoch and
steady-epoch times, steady examples/s, training FLOPs per example counted from the
model's layers, the achieved fraction of the float32 matmul rate measured in the
same run, and the final test accuracy over the seeds.

Run: `python benchmarks/time_to_accuracy.py [--quick] [--seeds 2] [--epochs 8] [--before-checkout DIR]` or
`mmkeras bench tta ...`. `--quick` runs avmnist only. Writes
`benchmarks/results/time_to_accuracy_<dataset>.{json,md}`. Candidate defaults are
measured in the same run with `--variant 'NAME={"branch_options": ...}'` (repeatable;
`mmkeras.train` options as JSON, plus an optional `"spec"` key of feature options by modality,
e.g. `{"spec": {"audio": {"hop_ms": 20}}}`), and `--suffix S` writes
`time_to_accuracy_<dataset>_S.{json,md}` instead, so a comparison keeps the main results.
"""
from __future__ import annotations

import time

PROCESS_START = time.perf_counter()  # before the heavy imports: they are part of a user's wait

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SECOND_TARGET = 0.85
BEFORE_COMMIT = "4668abf"  # the commit issue 14 was filed against
ROW_MARKER = "MMKERAS_ROW "
# Options that give back the defaults of commit 4668abf (the "before" row).
BEFORE_OPTIONS = {
    "branch_options": {"image": {"stages": [32, 64, 128], "convs_per_stage": 2, "stem_stride": 1}},
    "learning_rate": 1e-3,
    "fused_optimizer": False,
    "spec": {"audio": {"hop_ms": 10.0}},
}


def training_flops_per_example(model) -> float:
    """Training FLOPs of one example, counted layer by layer from the model's shapes.

    Counts the multiply-adds of convolutions, dense layers (per step on
    sequences), LSTMs and attention, and the STFT and mel projection of
    log-mel layers; element-wise layers (normalisation, activations, pooling)
    are left out. Training is taken as three times the forward pass (the
    backward pass computes gradients of both inputs and weights).
    """
    return 3.0 * _forward_flops(model)


def _forward_flops(model) -> float:
    import math

    import keras
    import numpy as np

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += _forward_flops(layer)
            continue
        try:
            inputs, outputs = layer.input, layer.output
        except (AttributeError, ValueError):  # never called in this graph, or called several times
            continue
        in_shape = _first_shape(inputs)
        out_shape = _first_shape(outputs)
        if in_shape is None or out_shape is None:
            continue
        out_elements = float(np.prod([d for d in out_shape[1:] if d is not None]))
        name = type(layer).__name__
        if name in ("Conv1D", "Conv2D"):
            kernel = float(np.prod(layer.kernel_size))
            total += 2 * out_elements * kernel * in_shape[-1] / layer.groups
        elif name in ("SeparableConv2D", "DepthwiseConv2D"):
            kernel = float(np.prod(layer.kernel_size))
            total += 2 * out_elements * kernel  # depthwise part per output channel
            if name == "SeparableConv2D":
                total += 2 * out_elements * in_shape[-1]
        elif name == "Dense":
            total += 2 * out_elements * in_shape[-1]
        elif name in ("LSTM", "Bidirectional"):
            recurrent = layer.forward_layer if name == "Bidirectional" else layer
            directions = 2 if name == "Bidirectional" else 1
            units = recurrent.units
            total += directions * 2 * in_shape[1] * 4 * units * (in_shape[-1] + units)
        elif name == "LogMelSpectrogram":
            frames, fft = out_shape[1], layer.fft_length
            total += frames * (5 * fft * math.log2(fft) + 2 * (fft // 2 + 1) * layer.num_mel_bins)
        elif name == "MultiHeadAttention":
            steps = in_shape[1] or 1
            total += 2 * 4 * steps * in_shape[-1] * in_shape[-1] + 2 * 2 * steps * steps * in_shape[-1]
    return total


def _first_shape(tensors):
    import keras

    flat = keras.tree.flatten(tensors)
    return tuple(flat[0].shape) if flat else None


def matmul_gflops(size: int = 1024, seconds: float = 3.0) -> float:
    """The float32 matmul rate of this machine, in GFLOP/s, with TensorFlow's default threads."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))

    @tf.function
    def product(a, b):
        return tf.reduce_sum(tf.matmul(a, b))

    product(a, b).numpy()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        product(a, b).numpy()
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - started) / 1e9


class AccuracyProbe:
    """Keras callback factory: test accuracy after each epoch, with the probe's own time set aside.

    The first epoch runs from the start of training (after the run's own `on_train_begin`), the others
    from their `on_epoch_begin`.
    """

    def __init__(self, evaluate, started: float):
        import keras

        probe = self

        class Callback(keras.callbacks.Callback):
            # It runs after the run's own callbacks, so the first epoch starts at its `on_train_begin`:
            # what those callbacks do before the first step (gradient blending's evaluation of the
            # untrained model) is part of the first epoch, as a user sees it.
            def on_train_begin(self, logs=None):
                probe.epoch_started = time.perf_counter()

            def on_epoch_begin(self, epoch, logs=None):
                if epoch:
                    probe.epoch_started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                ended = time.perf_counter()
                probe.epoch_seconds.append(ended - probe.epoch_started)
                probe.elapsed.append(ended - probe.started - probe.probe_seconds)
                probe.accuracy.append(float(evaluate()))
                probe.probe_seconds += time.perf_counter() - ended

        self.started = started
        self.epoch_started = started
        self.epoch_seconds: list[float] = []
        self.elapsed: list[float] = []
        self.accuracy: list[float] = []
        self.probe_seconds = 0.0
        self.callback = Callback()


def run_mmkeras(spec, *, seed: int, epochs: int, batch_size: int, test_data, options: dict) -> dict:
    """Train with `mmkeras.train` (as a user calls it) and return the probe's figures.

    `test_data` is `(features, labels)`, or a function that loads them: it is then called at the first probe,
    whose time is set aside, so that the first epoch starts tf.data in the process as a user's does.
    """
    import numpy as np

    import mmkeras

    started = time.perf_counter()
    holder = {}

    def test_arrays():
        if "test" not in holder:
            holder["test"] = test_data() if callable(test_data) else test_data
        return holder["test"]

    def accuracy():
        model = holder["model"]
        features, labels = test_arrays()
        predicted = model.predict(features, batch_size=256, verbose=0)["probabilities"].argmax(-1)
        return np.mean(predicted == labels)

    probe = AccuracyProbe(accuracy, started)

    def remember(model):
        holder["model"] = model

    with tempfile.TemporaryDirectory() as run_dir:
        result = mmkeras.train(spec, epochs=epochs, batch_size=batch_size, seed=seed, output_dir=run_dir,
                               verbose=0, early_stopping_patience=None, callbacks=[probe.callback],
                               prepare_model=remember, **options)
        flops = training_flops_per_example(result.model)
    figures = _figures(probe, flops)
    features, labels = test_arrays()
    for feature in spec.features:  # the final model with one modality marked absent
        absent = {**features, feature.presence_key: np.zeros_like(features[feature.presence_key])}
        predicted = result.model.predict(absent, batch_size=256, verbose=0)["probabilities"].argmax(-1)
        figures[f"accuracy_without_{feature.name}"] = round(float(np.mean(predicted == labels)), 4)
    return figures


def plain_model(spec):
    """The hand-written baseline: small, plain Keras, the way a user writes a first model."""
    import keras
    from keras import layers

    inputs, branches = {}, []
    for feature in spec.features:
        if feature.modality == "image":
            x = inputs[feature.name] = keras.Input(feature.shape, name=feature.name)
            x = layers.Rescaling(1 / 255)(x)
            x = layers.Conv2D(32, 3, activation="relu")(x)
            x = layers.MaxPooling2D()(x)
            x = layers.Conv2D(64, 3, activation="relu")(x)
            branches.append(layers.GlobalAveragePooling2D()(x))
        elif feature.modality == "audio":
            x = inputs[feature.name] = keras.Input(feature.shape, name=feature.name)
            rate = int(feature.options["sample_rate"])
            window = rate // 40  # 25 ms frames every 10 ms; the FFT is the next power of two (256 at 8 kHz)
            x = layers.MelSpectrogram(fft_length=1 << (window - 1).bit_length(), sequence_stride=rate // 100,
                                      sequence_length=window,
                                      sampling_rate=rate, num_mel_bins=40, power_to_db=True)(x)
            x = layers.Permute((2, 1))(x)  # (mels, frames) -> (frames, mels)
            x = layers.LayerNormalization()(x)
            branches.append(layers.LSTM(64)(x))
        else:
            x = inputs[feature.name] = keras.Input((), dtype="string", name=feature.name)
            vectorize = layers.TextVectorization(20000, output_sequence_length=int(feature.options["sequence_length"]))
            vectorize.adapt(_texts(spec, feature.name))
            x = layers.Embedding(20000, 64, mask_zero=True)(vectorize(x))
            branches.append(layers.LSTM(64)(x))
    x = layers.Concatenate()(branches) if len(branches) > 1 else branches[0]
    x = layers.Dense(128, activation="relu")(x)
    outputs = layers.Dense(spec.num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def _texts(spec, name):
    import mmkeras

    return mmkeras.text_corpus(spec, name)


def load_arrays(spec, split: str):
    """A split decoded into memory: `({name or "<name>_present": array}, labels)`."""
    import numpy as np
    import tensorflow as tf

    import mmkeras

    keys = [f.name for f in spec.features] + [f.presence_key for f in spec.features]
    columns, labels = {key: [] for key in keys}, []
    for features, batch_labels in mmkeras.make_dataset(spec, split, batch_size=256):
        labels.append(batch_labels.numpy())
        for key in keys:
            columns[key].append(features[key].numpy())
    arrays = {name: np.concatenate(parts) for name, parts in columns.items()}
    # Keras takes strings as tensors, not as NumPy object arrays.
    arrays = {name: tf.constant(value) if value.dtype == object else value for name, value in arrays.items()}
    return arrays, np.concatenate(labels)


def run_plain(spec, *, seed: int, epochs: int, batch_size: int, test_data) -> dict:
    """Train the plain model from memory and return the probe's figures (its data loading counted)."""
    import keras
    import numpy as np

    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    names = [feature.name for feature in spec.features]

    def plain(split_arrays):  # the plain model reads the features only
        features, labels = split_arrays
        return {name: features[name] for name in names}, labels

    train_x, train_y = plain(load_arrays(spec, "train"))
    validation = plain(load_arrays(spec, "validation")) if "validation" in spec.splits else None
    model = plain_model(spec)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    features, labels = plain(test_data)
    probe = AccuracyProbe(lambda: np.mean(model.predict(features, batch_size=256, verbose=0).argmax(-1) == labels),
                          started)
    model.fit(train_x, train_y, batch_size=batch_size, epochs=epochs, validation_data=validation, verbose=0,
              callbacks=[probe.callback])
    return _figures(probe, training_flops_per_example(model))


def _figures(probe: AccuracyProbe, flops: float) -> dict:
    steady = probe.epoch_seconds[1:] or probe.epoch_seconds
    return {
        "elapsed": [round(value, 2) for value in probe.elapsed],
        "epoch_seconds": [round(value, 2) for value in probe.epoch_seconds],
        "test_accuracy": [round(value, 4) for value in probe.accuracy],
        "first_epoch_seconds": round(probe.epoch_seconds[0], 2),
        "steady_epoch_seconds": round(statistics.median(steady), 2),
        "training_flops_per_example": flops,
    }


def seconds_to_reach(figures: dict, target: float, startup: float) -> float | None:
    """Seconds from process start until the probe first saw `target` test accuracy, or None."""
    for elapsed, accuracy in zip(figures["elapsed"], figures["test_accuracy"]):
        if accuracy >= target:
            return round(startup + elapsed, 1)
    return None


def _warm_up_keras() -> None:
    """Fit a one-layer model for one step: Keras' and TF's lazy start-up, paid once per process by any model."""
    import keras
    import numpy as np

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((2, 2)), np.zeros((2, 1)), verbose=0)


def with_feature_options(spec, by_modality: dict):
    """The spec with some features' options replaced: `{modality or feature name: {option: value}}`."""
    import dataclasses

    features = tuple(
        dataclasses.replace(feature, options={**feature.options, **by_modality.get(feature.name, {}),
                                              **by_modality.get(feature.modality, {})})
        for feature in spec.features
    )
    return spec.replace(features=features)


def run(spec_names, *, seeds: int, epochs: int, batch_size: int, models, command: str,
        variants: dict | None = None, before_checkout: Path | None = None) -> dict:
    """Run the benchmark and return the report (also saved by `main`).

    `variants` maps extra model labels to `mmkeras.train` options, run after `models`.
    `before_checkout`: a checkout of `BEFORE_COMMIT` for the "mmkeras before" row
    (`run_in_fresh_process`); None emulates it with `BEFORE_OPTIONS`.
    """
    variants = dict(variants or {})
    models = [*models, *variants]
    import keras

    import mmkeras

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fusion import logistic_regression_floor

    imports = time.perf_counter() - PROCESS_START  # this process's start-up, counted in the plain rows
    gflops = matmul_gflops()
    before = (f"code of commit {_commit(before_checkout)} ({before_checkout}), its defaults"
              if before_checkout else f"today's code with BEFORE_OPTIONS (the model of commit {BEFORE_COMMIT})")
    report = {"command": command, "machine": _machine(), "matmul_gflops": round(gflops, 1), "seeds": seeds,
              "before_row": before,
              "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
              "epochs": epochs, "batch_size": batch_size, "datasets": {}}
    for name in spec_names:
        started = time.perf_counter()
        spec = mmkeras.load_spec(name)
        mmkeras.prepare(spec)
        for split in spec.splits:
            mmkeras.scan_split(spec, split)
        if not report["datasets"]:
            _warm_up_keras()
        # Imports, TF start-up and data preparation: every model's run pays them.
        startup = imports + time.perf_counter() - started  # the plain row's; each mmkeras row measures its own
        test_data = load_arrays(spec, "test")
        train_examples = mmkeras.scan_split(spec, "train").kept
        floor = logistic_regression_floor(spec)["early (concatenated)"]
        rows = {label: [] for label in models}
        for seed in range(seeds):
            for label in models:
                keras.backend.clear_session()
                row_startup = startup
                if label == "plain Keras":
                    figures = run_plain(spec, seed=seed, epochs=epochs, batch_size=batch_size, test_data=test_data)
                else:
                    old_code = label == "mmkeras before" and before_checkout is not None
                    options = {} if old_code else BEFORE_OPTIONS if label == "mmkeras before" else variants.get(label, {})
                    figures = run_in_fresh_process(name, seed=seed, epochs=epochs, batch_size=batch_size,
                                                   options=options, checkout=before_checkout if old_code else None)
                    row_startup = figures["startup_seconds"]
                figures["seconds_to_floor"] = seconds_to_reach(figures, floor, row_startup)
                figures["seconds_to_0.85"] = seconds_to_reach(figures, SECOND_TARGET, row_startup)
                print(json.dumps({"dataset": name, "seed": seed, "model": label, **figures}), flush=True)
                rows[label].append(figures)
        report["datasets"][name] = {
            "startup_seconds": round(startup, 1),
            "mmkeras_startup_seconds": _mean_startup(rows),
            "floor": round(floor, 4),
            "train_examples": train_examples,
            "models": {label: _summarise(runs, train_examples, gflops) for label, runs in rows.items()},
        }
    report["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    report["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return report


def run_in_fresh_process(name: str, *, seed: int, epochs: int, batch_size: int, options: dict,
                         checkout: Path | None = None) -> dict:
    """One mmkeras row in a fresh Python process (this file, `--row`): a user's command, start-up included.

    With `checkout`, that folder comes first on `PYTHONPATH`, so `import mmkeras`
    finds the old package there (the "before" row). The child's figures come
    back as the last marked line of its output, with its own `startup_seconds`.
    """
    import subprocess

    request = json.dumps({"spec": name, "seed": seed, "epochs": epochs, "batch_size": batch_size, "options": options})
    env = dict(os.environ)
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--row", request], env=env,
                          capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(ROW_MARKER)]
    if done.returncode or not lines:
        raise RuntimeError(f"The row {request} ({checkout or 'this checkout'}) failed (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(ROW_MARKER):])


def row_in_this_process(request: dict) -> None:
    """In the child: train once with `mmkeras.train` and print the figures (see `run_in_fresh_process`)."""
    import mmkeras

    try:  # what `train` chooses as a user's first TensorFlow work (the checks below start TensorFlow first)
        from mmkeras.training.strategy import configure_threads
    except ImportError:  # a checkout from before the thread option keeps TensorFlow's defaults
        pass
    else:
        configure_threads(request["options"].get("intra_op_threads"), request["options"].get("inter_op_threads"))
    spec = mmkeras.load_spec(request["spec"])
    mmkeras.prepare(spec)
    for split in spec.splits:
        mmkeras.scan_split(spec, split)
    _warm_up_keras()
    startup = time.perf_counter() - PROCESS_START  # the same parts as the plain row's start-up
    tested = spec
    options = dict(request["options"])
    spec = with_feature_options(spec, options.pop("spec", {}))
    # The test split is decoded at the first probe (untimed), not before training: decoding it first would
    # start tf.data for the run, which a user's first epoch pays.
    figures = run_mmkeras(spec, seed=request["seed"], epochs=request["epochs"], batch_size=request["batch_size"],
                          test_data=lambda: load_arrays(tested, "test"), options=options)
    figures["startup_seconds"] = round(startup, 1)
    figures["mmkeras"] = str(Path(mmkeras.__file__).resolve().parent)
    print(ROW_MARKER + json.dumps(figures), flush=True)


def _summarise(runs: list[dict], train_examples: int, gflops: float) -> dict:
    def mean(key):
        values = [run[key] for run in runs if run[key] is not None]
        return round(statistics.mean(values), 2) if len(values) == len(runs) else None

    final = [run["test_accuracy"][-1] for run in runs]
    without = {key: round(statistics.mean(run[key] for run in runs), 4)
               for key in runs[0] if key.startswith("accuracy_without_")}
    steady = statistics.mean(run["steady_epoch_seconds"] for run in runs)
    examples_per_second = train_examples / steady
    flops = runs[0]["training_flops_per_example"]
    return {
        "seconds_to_floor": mean("seconds_to_floor"),
        "seconds_to_0.85": mean("seconds_to_0.85"),
        "first_epoch_seconds": mean("first_epoch_seconds"),
        "steady_epoch_seconds": round(steady, 2),
        "first_to_steady": round(mean("first_epoch_seconds") / steady, 2),
        "examples_per_second": round(examples_per_second, 1),
        "training_mflops_per_example": round(flops / 1e6, 1),
        "matmul_fraction": round(flops * examples_per_second / (gflops * 1e9), 3),
        "final_accuracy_mean": round(statistics.mean(final), 4),
        "final_accuracy_std": round(statistics.pstdev(final), 4),
        **without,
        "runs": runs,
    }


def _mean_startup(rows: dict) -> float | None:
    values = [run["startup_seconds"] for runs in rows.values() for run in runs if "startup_seconds" in run]
    return round(statistics.mean(values), 1) if values else None


def _commit(checkout: Path) -> str:
    import subprocess

    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or "unknown"


def _machine() -> str:
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        pass
    extras = [flag for flag in ("avx512f", "avx512_bf16", "amx_bf16") if f" {flag}" in flags]
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {' '.join(extras) or 'no AVX-512'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", action="append", help="dataset spec(s); default avmnist and tuxpaint")
    parser.add_argument("--quick", action="store_true", help="avmnist only")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", default="mmkeras defaults,mmkeras before,plain Keras")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                        help="an extra mmkeras row: a label and `mmkeras.train` options as JSON (repeatable)")
    parser.add_argument("--suffix", default="", help="write time_to_accuracy_<dataset>_<suffix>.{json,md}")
    parser.add_argument("--before-checkout", type=Path, metavar="DIR",
                        help=f"a checkout of commit {BEFORE_COMMIT} for the 'mmkeras before' row (its own code and "
                             "defaults, a fresh process per seed); without it the row emulates that model with "
                             "today's code")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: one mmkeras row (run_in_fresh_process)
    args = parser.parse_args()
    if args.row:
        row_in_this_process(json.loads(args.row))
        return
    if args.before_checkout and not (args.before_checkout / "mmkeras" / "__init__.py").is_file():
        parser.error(f"--before-checkout {args.before_checkout}: no mmkeras package there; make one with "
                     f"`git worktree add --detach {args.before_checkout} {BEFORE_COMMIT}`.")
    variants = {}
    for text in args.variant:
        label, _, options = text.partition("=")
        try:
            variants[label.strip()] = json.loads(options)
        except json.JSONDecodeError as error:
            parser.error(f"--variant {text!r}: the options after '=' must be JSON ({error}).")
    specs = args.spec or (["avmnist"] if args.quick else ["avmnist", "tuxpaint"])
    command = "python benchmarks/time_to_accuracy.py " + shlex.join(sys.argv[1:])
    report = run(specs, seeds=args.seeds, epochs=args.epochs, batch_size=args.batch_size,
                 models=[m.strip() for m in args.models.split(",") if m.strip()], command=command.strip(),
                 variants=variants, before_checkout=args.before_checkout.resolve() if args.before_checkout else None)
    suffix = f"_{args.suffix}" if args.suffix else ""
    RESULTS.mkdir(exist_ok=True)
    for name, data in report["datasets"].items():  # one file per dataset: a later run of one keeps the other's
        single = {**report, "datasets": {name: data}}
        (RESULTS / f"time_to_accuracy_{name}{suffix}.json").write_text(json.dumps(single, indent=1), encoding="utf-8")
        (RESULTS / f"time_to_accuracy_{name}{suffix}.md").write_text(format_markdown(single), encoding="utf-8")
    print(format_markdown(report))


def format_markdown(report: dict) -> str:
    """The report as Markdown: one table per dataset, ratios against the plain model and the before row."""
    lines = [
        "# Time to accuracy",
        "",
        (f"`{report['command']}`; {report['machine']}; float32 matmul {report['matmul_gflops']} GFLOP/s "
        f"(measured in the same run); batch {report['batch_size']}, {report['epochs']} epochs, "
        f"{report['seeds']} seeds; times are means over the seeds. Measured {report.get('date', '')}; load "
        f"average (1, 5, 15 min) {report.get('load_average_at_start')} at the start, "
        f"{report.get('load_average_at_end')} at the end (2 cores: above 2 the machine was shared)."),
        "",
        f"\"mmkeras before\": {report.get('before_row', 'BEFORE_OPTIONS')}.",
        "",
    ]
    for name, data in report["datasets"].items():
        lines += [
            f"## {name}",
            "",
            ("Every mmkeras row runs in a fresh process and counts its own start-up (imports, TF, data checks; "
            f"{data.get('mmkeras_startup_seconds')} s on average); the plain model's counts this process's "
            f"({data['startup_seconds']} s). "
            f"Logistic-regression early-fusion floor: {data['floor']}."),
            "",
            ("| model | s to floor | s to 0.85 | first epoch s | steady epoch s | first / steady | MFLOP/example "
            "(train) | % of matmul rate | final test accuracy |"),
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for label, row in data["models"].items():
            absent = ", ".join(f"without {key[len('accuracy_without_'):]} {value}"
                               for key, value in row.items() if key.startswith("accuracy_without_"))
            lines.append(
                f"| {label} | {row['seconds_to_floor']} | {row['seconds_to_0.85']} | {row['first_epoch_seconds']} "
                f"| {row['steady_epoch_seconds']} | {row['first_to_steady']} | {row['training_mflops_per_example']} "
                f"| {100 * row['matmul_fraction']:.0f} | {row['final_accuracy_mean']} ± {row['final_accuracy_std']}"
                + (f" ({absent})" if absent else "") + " |"
            )
        lines += ["", *target_lines(data["models"]), ""]
    return "\n".join(lines) + "\n"


def target_lines(models: dict) -> list[str]:
    """The issue's targets, as ratios from this run (met or not)."""
    after, before, plain = (models.get(label) for label in ("mmkeras defaults", "mmkeras before", "plain Keras"))
    if after is None:
        return []
    lines = ["Targets (ratios from this run):", ""]

    def line(text, value, limit, higher_is_better=False):
        if value is None:
            lines.append(f"- {text}: not measured (not reached)")
            return
        met = value >= limit if higher_is_better else value <= limit
        lines.append(f"- {text}: {value:.2f} (target {'>=' if higher_is_better else '<='} {limit:.2f}): "
                     f"{'met' if met else 'NOT met'}")

    if plain is not None:
        line("steady epoch, defaults / plain Keras", after["steady_epoch_seconds"] / plain["steady_epoch_seconds"], 1.0)
    if before is not None and before["seconds_to_floor"] and after["seconds_to_floor"]:
        line("time to the floor, defaults / before", after["seconds_to_floor"] / before["seconds_to_floor"], 1 / 3)
    line("first epoch / steady epoch, defaults", after["first_to_steady"], 1.5)
    line("share of the matmul rate, defaults", after["matmul_fraction"], 0.5, higher_is_better=True)
    if before is not None:
        line("final accuracy, defaults - before", after["final_accuracy_mean"] - before["final_accuracy_mean"], 0.0,
             higher_is_better=True)
    return lines


if __name__ == "__main__":
    main()
