"""The `mmkeras` command: train | tune | evaluate | export | predict | demo | bench.

Each sub-command parses its arguments, calls one library function and
returns an exit code: 0 on success, 2 with a one-line error on bad arguments
or bad data. TensorFlow is imported only once a command runs, so `mmkeras --help`
answers at once, and its start-up noise is hidden unless `--verbose` is given
(or the user sets `TF_CPP_MIN_LOG_LEVEL`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

# `mmkeras bench NAME` -> the script in benchmarks/ it runs. The scripts (and the
# results/ they write) live in a source checkout; an installed wheel has none.
BENCHMARKS = {
    "fusion": "fusion.py",
    "pipeline": "input_pipeline.py",
    "serving": "serving.py",
    "serving_load": "serving_load.py",
    "alignment": "alignment.py",
    "alignment_remedies": "alignment_training_remedies.py",
    "generalising": "generalising_defaults.py",
    "blend_heads": "blend_heads.py",
    "one_change": "one_change.py",
    "train": "train_throughput.py",
    "tta": "time_to_accuracy.py",
    "step": "optimizer_step.py",
    "first_step": "first_step.py",
    "step_options": "step_options.py",
    "timeline": "train_timeline.py",
    "tune": "tune.py",
    "calibration": "calibration.py",
    "keras_hub": "keras_hub_cost.py",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `mmkeras` command line; returns the process exit code.

    Example:
      >>> main(["train", "tiny", "--epochs", "1"])
      0
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if not args.verbose and "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        _import_tensorflow_quietly()
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, ImportError) as error:  # ImportError: an extra
        print(f"mmkeras {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - TF errors for bad data arrive as OpError
        if type(error).__name__ in ("InvalidArgumentError", "NotFoundError", "OpError"):
            print(f"mmkeras {args.command}: error: {_one_line(error)}", file=sys.stderr)
            return 2
        raise


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe its devices with their start-up messages hidden.

    On a machine without a GPU, TensorFlow prints CUDA-probing lines, oneDNN
    and CPU-feature notices and absl's "before InitializeLog" warning to the C
    stderr, partly before `TF_CPP_MIN_LOG_LEVEL` is read, so file descriptor 2
    is redirected while it starts. If the import fails, what it printed is
    shown before the error.
    """
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # later C++ info and warnings too
    if "tensorflow" in sys.modules:  # called in-process after TensorFlow started: nothing left to hide
        return
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe prints here, not at import
        except BaseException:
            os.dup2(saved_stderr, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)


def _one_line(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(str(message).split())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmkeras", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="train a classifier on a dataset spec")
    train.add_argument("spec", help="a spec name (tiny, avmnist, tuxpaint) or a YAML path")
    train.add_argument("--fusion", help="a fusion name (see mmkeras.FUSIONS); default concat")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--output", help="run folder; rerunning with the same folder resumes")
    train.add_argument("--config", help="a run config YAML ({model: ..., training: ..., runtime: ...})")
    train.add_argument("--strategy", choices=("auto", "default", "mirrored", "multi_worker"))
    train.add_argument("--seed", type=int, help="seed weights, shuffling and augmentation: the same run again")
    train.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                       help="skip temperature scaling on the validation data after training")
    train.add_argument(
        "--validation-fraction", type=float,
        help="when the spec has no validation split, the share of the train split held out for it "
             "(default 0.1; 0: none)",
    )
    train.set_defaults(handler=_train)

    tune = commands.add_parser("tune", help="search fusions, branches and training options with KerasTuner")
    tune.add_argument("spec", help="a spec name (tiny, avmnist, tuxpaint) or a YAML path; needs a validation split")
    tune.add_argument("--max-trials", type=int, default=10, help="number of trials, earlier runs' included")
    tune.add_argument("--epochs", type=int, default=5, help="epochs per trial (Hyperband: the most a trial gets)")
    tune.add_argument("--algorithm", choices=("hyperband", "bayesian", "random"), default="hyperband")
    tune.add_argument("--objective", default="val_accuracy", help="a history metric, e.g. val_accuracy or val_loss")
    tune.add_argument("--output", help="search folder (default tuning/SPEC-ALGORITHM); rerunning resumes it")
    tune.add_argument(
        "--config", help="a run config YAML: its search: section narrows or extends the default space, "
                         "its model/training/runtime sections fix the trials' other options",
    )
    tune.set_defaults(handler=_tune)

    evaluate = commands.add_parser("evaluate", help="evaluate a run: report.json and plots")
    evaluate.add_argument("run", help="a run folder written by `mmkeras train`")
    evaluate.add_argument("--split", default="test",
                          help="the split to evaluate; its report goes to <run>/evaluation/ for test, "
                               "<run>/evaluation_<split>/ for any other")
    evaluate.set_defaults(handler=_evaluate)

    export = commands.add_parser("export", help="export a run as a versioned SavedModel for TF Serving")
    export.add_argument("run", help="a run folder written by `mmkeras train`")
    export.add_argument("--base-dir", default="saved_models")
    export.add_argument("--name", help="model name (folder under --base-dir)")
    export.add_argument("--version", type=int, help="version number; default: the next free one")
    export.set_defaults(handler=_export)

    predict = commands.add_parser("predict", help="predict one example given as JSON")
    predict.add_argument("run", help="a run folder written by `mmkeras train`")
    predict.add_argument(
        "--input", required=True,
        help="JSON file with one object (or a list): text inline, image/audio as file paths relative to it",
    )
    predict.set_defaults(handler=_predict)

    demo = commands.add_parser("demo", help="train, evaluate and export on the default dataset (avmnist)")
    demo.add_argument("--spec", default="avmnist")
    demo.add_argument("--fusion", default="concat")
    demo.add_argument("--epochs", type=int)
    demo.add_argument("--seed", type=int, help="seed the training run (unseeded by default, as `train`)")
    demo.add_argument("--output", default="runs/demo")
    demo.add_argument("--base-dir", default="saved_models")
    demo.set_defaults(handler=_demo)

    bench = commands.add_parser("bench", help="run a benchmark and save its figures in benchmarks/results")
    bench.add_argument("benchmark", choices=sorted(BENCHMARKS))
    bench.add_argument("options", nargs=argparse.REMAINDER, help="options passed to the benchmark script")
    bench.set_defaults(handler=_bench)

    for command in commands.choices.values():  # after the command's name: `mmkeras train tiny --verbose`
        command.add_argument(
            "--verbose", action="store_true",
            help="show TensorFlow's start-up messages (CUDA probing, oneDNN notices), hidden by default; "
                 "setting TF_CPP_MIN_LOG_LEVEL yourself shows them too",
        )
    return parser


def _train(args) -> int:
    import mmkeras

    overrides = {
        key: value
        for key, value in (("fusion", args.fusion), ("epochs", args.epochs), ("batch_size", args.batch_size),
                           ("strategy", args.strategy), ("validation_fraction", args.validation_fraction),
                           ("seed", args.seed))
        if value is not None
    }
    spec = mmkeras.load_spec(args.spec)
    if args.config:
        from mmkeras.training.config import load_run_config

        config = load_run_config(args.config)
        overrides.update(model_config=config.model, training_config=config.training, runtime_config=config.runtime)
        if config.features:  # a unimodal run's config.yaml trains the same features again
            spec = spec.with_features(config.features)
    result = mmkeras.train(spec, output_dir=args.output, calibrate=args.calibrate, **overrides)
    print(f"run folder: {result.run_dir}")
    print(f"best model: {result.best_model_path}")
    return 0


def _tune(args) -> int:
    import mmkeras

    result = mmkeras.tune(
        args.spec, search_space=args.config, algorithm=args.algorithm, max_trials=args.max_trials,
        epochs=args.epochs, objective=args.objective, output_dir=args.output,
    )
    print(f"best trial:  {result.best_trial} ({result.objective} {result.best_value:.4f}), run folder "
          f"{result.best_run_dir}")
    print(f"best config: {result.best_config_path}  (mmkeras train {args.spec} --config {result.best_config_path})")
    print(f"trials:      {result.trials_csv_path}")
    print(f"plot:        {result.plot_path}")
    return 0


def _evaluate(args) -> int:
    from mmkeras.runs.evaluate import evaluate_run

    report = evaluate_run(args.run, split=args.split)
    _print_report(report)
    return 0


def _export(args) -> int:
    from mmkeras.runs.export import export_run

    path = export_run(args.run, base_dir=args.base_dir, name=args.name, version=args.version)
    print(f"exported: {path}")
    _print_skew_check(path)
    return 0


def _predict(args) -> int:
    from mmkeras.runs.predict import predict_run

    path = Path(args.input)
    if not path.is_file():
        raise FileNotFoundError(f"No input file {str(path)!r}: give a JSON file with one example object.")
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}).") from None
    for row in predict_run(args.run, rows if isinstance(rows, list) else [rows], base_dir=path.parent):
        print(json.dumps(row))
    return 0


def _demo(args) -> int:
    import mmkeras
    from mmkeras.runs.evaluate import evaluate_run
    from mmkeras.runs.export import export_run
    from mmkeras.training.config import load_run_config
    from mmkeras.training.run_dir import RunPaths

    paths = RunPaths(Path(args.output))
    if paths.final_model.is_file() and not paths.can_resume():
        # Rerunning the demo shows the finished run again rather than failing on its folder.
        fusion = load_run_config(paths.config).model.fusion
        if fusion != args.fusion:
            raise FileExistsError(
                f"{paths.run_dir} holds a finished {fusion} demo run; give --output for a {args.fusion} one, "
                "or delete that folder."
            )
        print(f"{paths.run_dir} holds a finished demo run: evaluating and exporting it (delete it to train again).")
    else:
        overrides = {key: value for key, value in (("epochs", args.epochs), ("seed", args.seed)) if value is not None}
        mmkeras.train(args.spec, fusion=args.fusion, output_dir=paths.run_dir, **overrides)
    report = evaluate_run(paths.run_dir)
    export = export_run(paths.run_dir, base_dir=args.base_dir)
    _print_report(report)
    print(f"run folder:   {paths.run_dir}")
    print(f"evaluation:   {paths.run_dir / 'evaluation'}")
    print(f"saved model:  {export}")
    _print_skew_check(export)
    return 0


def _bench(args) -> int:
    import runpy

    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "setup.cfg").is_file() or not (checkout / "benchmarks").is_dir():
        raise FileNotFoundError(
            f"`mmkeras bench` needs a source checkout: it runs the scripts in benchmarks/ and saves their results "
            f"there, and this mmkeras is installed in {checkout} without them. Clone the mmkeras repository, "
            '`pip install -e ".[dev]"` in it, and run `mmkeras bench` again.'
        )
    script = checkout / "benchmarks" / BENCHMARKS[args.benchmark]
    if not script.is_file():
        raise FileNotFoundError(f"No benchmark script {script}: run from a source checkout of mmkeras.")
    sys.argv = [str(script), *args.options]
    sys.path.insert(0, str(script.parent))  # as `python benchmarks/<script>` has it: the scripts share helpers
    runpy.run_path(str(script), run_name="__main__")
    return 0


def _print_skew_check(version_dir: Path) -> None:
    from mmkeras.export.saved_model import EXTRA_DIR, SKEW_CHECK_FILE

    path = Path(version_dir) / EXTRA_DIR / SKEW_CHECK_FILE
    if path.is_file():
        check = json.loads(path.read_text())
        print(f"skew check:   passed on {check['num_examples']} examples of split {check['split']!r} "
              f"(max |probability difference| {check['max_abs_diff']:.2g} <= {check['tolerance']:g})")
    else:
        print("skew check:   not run (the spec has no test split)")


def _print_report(report: dict) -> None:
    print(f"accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}  ({report['num_examples']} examples)")
    for name, scores in report["reliance"].items():
        print(f"  without {name}: {scores['absent']:.4f} (with every input: {report['accuracy']:.4f})   "
              f"{name} shuffled: {scores['shuffled']:.4f}")
    for warning in report.get("warnings", []):
        print(f"  WARNING: {warning}")
    calibration = report.get("calibration", {}).get("patterns", {}).get("all_inputs")
    if calibration:
        after = "" if calibration["after"] is None else f" -> {calibration['after']['ece']:.4f} after calibration"
        print(f"  ECE {calibration['before']['ece']:.4f}{after}")
    for name, share in (report.get("attribution", {}).get("overall") or {}).items():
        print(f"  {name} attribution share: {share:.3f}")
    for name, path in report.get("files", {}).items():
        print(f"  {name}: {path}")


if __name__ == "__main__":
    sys.exit(main())
