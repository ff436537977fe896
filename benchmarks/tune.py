"""Tuning benchmark: does a small KerasTuner search beat the defaults at the same epoch budget?

For a dataset spec it runs `mmkeras.tune` (default search space, a stated
number of trials and epochs per trial), then trains the best trial's config
and the defaults from scratch with the same epochs over N seeds, and compares
their test accuracy. The search scores trials on the validation split only;
the test split is used once per retrained model.

Run: `python benchmarks/tune.py --spec avmnist [--algorithm hyperband] [--max-trials 6] [--epochs 3]
[--seeds 2]` or `mmkeras bench tune ...`. Writes `benchmarks/results/tune_<dataset>.{json,md}`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def run(spec_name: str, *, algorithm: str, max_trials: int, epochs: int, seeds: int, batch_size: int,
        work_dir: Path, command: str) -> dict:
    """Search, retrain the best config and the defaults over `seeds` seeds, and score them on the test split."""
    import mmkeras
    from mmkeras.training.config import load_run_config

    spec = mmkeras.load_spec(spec_name)
    mmkeras.prepare(spec)
    load_at_start = os.getloadavg()
    started = time.perf_counter()
    search = mmkeras.tune(spec, algorithm=algorithm, max_trials=max_trials, epochs=epochs, batch_size=batch_size,
                          output_dir=work_dir / "search", seed=0)
    search_minutes = (time.perf_counter() - started) / 60
    best = load_run_config(search.best_config_path)
    rows = []
    for name, config in (("defaults", None), ("tuned (best trial's config)", best)):
        accuracies, seconds = [], []
        for seed in range(seeds):
            options = {"batch_size": batch_size, "seed": seed} if config is None else {
                "model_config": config.model, "training_config": dataclasses.replace(config.training, seed=seed)}
            run_started = time.perf_counter()
            result = mmkeras.train(spec, output_dir=work_dir / f"{name.split()[0]}-seed{seed}", epochs=epochs,
                                   verbose=0, **options)
            seconds.append(time.perf_counter() - run_started)
            accuracies.append(float(mmkeras.evaluate(result.model, spec, "test")["accuracy"]))
            print(f"{name} seed {seed}: test accuracy {accuracies[-1]:.4f} ({seconds[-1]:.0f} s)", flush=True)
        rows.append({"model": name, "test_accuracy": accuracies, "mean": statistics.mean(accuracies),
                     "std": statistics.pstdev(accuracies), "train_seconds": seconds})
    return {
        "dataset": spec.name,
        "command": command,
        "budget": {"algorithm": algorithm, "max_trials": max_trials, "epochs_per_trial": epochs,
                   "retrain_epochs": epochs, "seeds": seeds, "batch_size": batch_size},
        "search": {
            "minutes": search_minutes,
            "trials": [{key: value for key, value in row.items() if key != "run_dir"} for row in search.trials],
            "best_trial": search.best_trial,
            "best_validation": search.best_value,
            "best_config": best.to_dict(),
            "influence": search.influence,
        },
        "rows": rows,
        "wall_minutes": (time.perf_counter() - started) / 60,
        "load_average": {"start": [round(x, 2) for x in load_at_start],
                         "end": [round(x, 2) for x in os.getloadavg()]},
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def write_results(results: dict, directory: Path = RESULTS) -> Path:
    """Write `tune_<dataset>.json` and a Markdown table beside it; return the Markdown file."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"tune_{results['dataset']}"
    (directory / f"{stem}.json").write_text(json.dumps(results, indent=2))
    budget, search = results["budget"], results["search"]
    defaults, tuned = results["rows"]
    gap = tuned["mean"] - defaults["mean"]
    noise = max(defaults["std"], tuned["std"])
    if gap > 2 * noise and gap > 0:
        verdict = f"the search beat the defaults by {gap:+.3f} (more than twice the seed spread {noise:.3f})"
    elif gap < -2 * noise:
        verdict = f"the search did worse than the defaults ({gap:+.3f}; seed spread {noise:.3f})"
    else:
        verdict = (f"no clear winner: the difference ({gap:+.3f}) is within twice the seed spread ({noise:.3f}) "
                   f"at {len(defaults['test_accuracy'])} seeds")
    varied = {key: value for key, value in search["trials"][0].items()} if search["trials"] else {}
    names = [key for key in varied if key not in ("trial", "status", "epochs", "seconds", "val_accuracy")]
    lines = [
        f"# Tuning benchmark: `{results['dataset']}`", "",
        f"Command: `{results['command']}`  ",
        (f"Budget: {budget['algorithm']} search, {budget['max_trials']} trials of at most "
         f"{budget['epochs_per_trial']} epochs (default search space, batch {budget['batch_size']}); the best config "
         f"and the defaults are then trained from scratch for {budget['retrain_epochs']} epochs over "
         f"{budget['seeds']} seeds and scored on the test split.  "),
        (f"Search {search['minutes']:.1f} minutes; {results['wall_minutes']:.1f} minutes in all. Machine: "
         f"{results['machine']}; load average {results['load_average']['start']} at the start, "
         f"{results['load_average']['end']} at the end (shared machine).  "),
        f"Measured {results['measured']}.", "",
        "| model | test accuracy (mean ± std over seeds) | per seed | train s per run |",
        "|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(f"| {row['model']} | {row['mean']:.4f} ± {row['std']:.4f} | "
                     f"{', '.join(f'{a:.4f}' for a in row['test_accuracy'])} | "
                     f"{statistics.mean(row['train_seconds']):.0f} |")
    lines += ["", f"**Verdict at this budget:** {verdict}.", "",
              f"Best trial {search['best_trial']}: validation accuracy {search['best_validation']:.4f}.", "",
              "## Trials", "", "| " + " | ".join(["trial", *names, "val_accuracy", "epochs", "seconds"]) + " |",
              "|" + "---|" * (len(names) + 4)]
    for trial in search["trials"]:
        cells = [trial["trial"], *[_cell(trial.get(name)) for name in names], _cell(trial.get("val_accuracy")),
                 _cell(trial.get("epochs")), _cell(trial.get("seconds"))]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    influence = ", ".join(f"{name} {score:.2f}" for name, score in search["influence"].items()) or "too few trials"
    lines += ["", f"Influence on the validation accuracy (rough, {len(search['trials'])} trials): {influence}.", ""]
    path = directory / f"{stem}.md"
    path.write_text("\n".join(lines))
    return path


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def main(argv=None) -> None:
    """Parse the options, run the benchmark and save its results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="avmnist")
    parser.add_argument("--algorithm", default="hyperband", choices=("hyperband", "bayesian", "random"))
    parser.add_argument("--max-trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--work-dir", help="folder for the search and the runs (default: a temporary one)")
    args = parser.parse_args(argv)
    command = "python benchmarks/tune.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as temporary:
        work_dir = Path(args.work_dir or temporary)
        results = run(args.spec, algorithm=args.algorithm, max_trials=args.max_trials, epochs=args.epochs,
                      seeds=args.seeds, batch_size=args.batch_size, work_dir=work_dir, command=command)
    print(write_results(results).read_text())


if __name__ == "__main__":
    main()
