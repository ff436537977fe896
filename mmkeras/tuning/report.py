"""What a search leaves behind: the trials table, each hyperparameter's influence, and their plot."""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Figures are made without pyplot: they only go to files, and the caller's backend is left alone.
from matplotlib.figure import Figure
from scipy import stats

# Columns every row of trials.csv has besides the hyperparameters and the objective.
TRIAL_COLUMNS = ("trial", "status")
RESULT_COLUMNS = ("epochs", "seconds", "run_dir")
# Panels of the plot: the hyperparameters that moved the objective most.
MAX_PLOTTED = 4


def write_trials_csv(rows: Sequence[Mapping[str, Any]], names: Sequence[str], objective: str,
                     path: str | os.PathLike) -> Path:
    """Write one row per trial: id, status, hyperparameters, objective, epochs, seconds, run folder.

    Args:
      rows: the trials' rows (see `mmkeras.tuning.search`), in start order.
      names: the hyperparameter columns, in the search space's order.
      objective: the objective's column name (e.g. "val_accuracy").
      path: the CSV file.

    Returns:
      `path`. An empty cell means the value is unknown (a failed trial has no objective).
    """
    path = Path(path)
    columns = [*TRIAL_COLUMNS, *names, objective, *RESULT_COLUMNS]
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({column: "" if row.get(column) is None else row[column] for column in columns})
    return path


def influence(rows: Sequence[Mapping[str, Any]], names: Sequence[str], objective: str,
              categorical: Sequence[str]) -> dict[str, float]:
    """Score how much each hyperparameter moved the objective over the finished trials, in [0, 1].

    A choice scores its correlation ratio (the share of the objective's
    variance explained by the group means); a numeric range scores its
    squared Spearman rank correlation. With few trials both are rough: they
    rank what to look at first, they prove nothing (and Hyperband's trials
    differ in epochs too, which these scores do not separate). Hyperparameters that took
    one value only, or with fewer than 3 finished trials, are left out.

    Args:
      rows: the trials' rows.
      names: the hyperparameters to score.
      objective: the objective's column.
      categorical: the names that are choices (the others are ranges).

    Returns:
      name -> score, highest first.

    Example:
      >>> influence(rows, ["fusion", "learning_rate"], "val_accuracy", categorical=["fusion"])
      {'fusion': 0.71, 'learning_rate': 0.12}
    """
    finished = [row for row in rows if _finite(row.get(objective))]
    if len(finished) < 3:
        return {}
    scores = np.array([row[objective] for row in finished], dtype=float)
    result = {}
    for name in names:
        values = [row.get(name) for row in finished]
        if len(set(map(str, values))) < 2:
            continue
        if name in categorical:
            result[name] = _correlation_ratio([str(value) for value in values], scores)
        else:
            rho = stats.spearmanr(np.asarray(values, dtype=float), scores).statistic
            result[name] = 0.0 if math.isnan(rho) else float(rho) ** 2
    return dict(sorted(result.items(), key=lambda item: -item[1]))


def plot_search(rows: Sequence[Mapping[str, Any]], scores: Mapping[str, float], objective: str,
                path: str | os.PathLike, *, log_scaled: Sequence[str] = (), best_trial: str | None = None) -> Path:
    """Plot the objective of every finished trial against the most influential hyperparameters.

    One panel per hyperparameter (at most `MAX_PLOTTED`, by `scores`), the best
    trial starred; choices are spread along the axis by value. With no scores
    (fewer than 3 finished trials) the one panel is the objective per trial.

    Args:
      rows: the trials' rows.
      scores: `influence(...)`'s result.
      objective: the objective's column.
      path: the PNG to write.
      log_scaled: names plotted on a log axis (log-sampled ranges).
      best_trial: the best trial's id, starred.

    Returns:
      `path`.
    """
    finished = [row for row in rows if _finite(row.get(objective))]
    names = list(scores)[:MAX_PLOTTED] or ["trial"]
    figure = Figure(figsize=(3.6 * len(names), 3.2))
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    for axis, name in zip(axes, names):
        values = [row.get(name) for row in finished]
        numeric = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values)
        labels = sorted({str(value) for value in values}, key=_natural)
        positions = [float(value) for value in values] if numeric else [labels.index(str(v)) for v in values]
        objective_values = [row[objective] for row in finished]
        axis.scatter(positions, objective_values, alpha=0.7)
        best = [i for i, row in enumerate(finished) if row.get("trial") == best_trial]
        if best:
            axis.scatter([positions[best[0]]], [objective_values[best[0]]], marker="*", s=160, color="tab:red",
                         label="best trial")
            axis.legend(loc="best", fontsize="small")
        if not numeric:
            axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize="small")
        elif name in log_scaled:
            axis.set_xscale("log")
        title = f"{objective} per trial" if name == "trial" else f"{name} (influence {scores[name]:.2f})"
        axis.set(title=title, xlabel=name, ylabel=objective)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def _correlation_ratio(groups: Sequence[str], scores: np.ndarray) -> float:
    total = float(((scores - scores.mean()) ** 2).sum())
    if total == 0.0:
        return 0.0
    between = sum(
        float((members := scores[[group == key for group in groups]]).size) * (members.mean() - scores.mean()) ** 2
        for key in set(groups)
    )
    return between / total


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _natural(text: str):
    """Sort numbers as numbers, the rest as text."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)
