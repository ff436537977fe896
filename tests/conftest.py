"""Shared tiny fixtures. Tests use tiny shapes and the generated `tiny` dataset."""
from __future__ import annotations

import copy
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Build generated datasets into a per-session folder, never the user's cache."""
    if "MMKERAS_TEST_CACHE_DIR" in os.environ:
        os.environ["MMKERAS_CACHE_DIR"] = os.environ["MMKERAS_TEST_CACHE_DIR"]
    else:
        os.environ["MMKERAS_CACHE_DIR"] = str(tmp_path_factory.mktemp("mmkeras-cache"))
    yield


@pytest.fixture(scope="session")
def tiny_spec(_isolated_cache):
    """The bundled `tiny` spec with its data built into the session cache."""
    import mmkeras

    spec = mmkeras.load_spec("tiny")
    mmkeras.prepare(spec)
    return spec


# The tiny classifier the model, training, evaluation and serving tests build: 8-wide, one
# 4-filter conv stage, 4-unit LSTMs. Written once; `tiny_model(...)` returns a fresh copy.
TINY_MODEL = {
    "units": 8,
    "embed_dim": 8,
    "branch_options": {
        "text": {"token_dim": 4, "lstm_units": 4, "bidirectional": False},
        "image": {"stages": [4], "convs_per_stage": 1},
        "audio": {"encoder": "conv1d", "conv_stages": [4]},
    },
}


def tiny_model_settings(**changes) -> dict:
    """A fresh copy of `TINY_MODEL` with `changes`; `branch_options` are merged per modality."""
    settings = copy.deepcopy(TINY_MODEL)
    branch_changes = changes.pop("branch_options", {})
    for modality, options in branch_changes.items():
        settings["branch_options"].setdefault(modality, {}).update(options)
    return {**settings, **changes}


@pytest.fixture(scope="session")
def tiny_model():
    """`tiny_model_settings`: call it for the tiny classifier's `build_classifier` / `train` arguments."""
    return tiny_model_settings


@pytest.fixture(scope="session")
def tiny_train_test_spec(tiny_spec, tmp_path_factory):
    """The tiny data as a first user's spec: `train` and `test` splits only, in its own YAML file.

    Its manifest (absolute paths) adds a `speaker` column, 8 speakers dealt in turn,
    for group-disjoint validation carving (`spec.replace(group="speaker")`).
    """
    import csv

    import yaml

    import mmkeras

    folder = tmp_path_factory.mktemp("train-test-spec")
    with open(tiny_spec.data_dir / "manifest.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    for index, row in enumerate(rows):
        row.update(speaker=f"s{index % 8}", **{key: str(tiny_spec.data_dir / row[key])
                                              for key in ("picture", "sound") if row[key]})
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    raw = yaml.safe_load((mmkeras.spec.DEFAULT_SPECS_DIR / "tiny.yaml").read_text())
    for key in ("source", "source_options"):
        raw.pop(key)
    raw["splits"] = {split: {"manifest": "manifest.csv", "select": split} for split in ("train", "test")}
    (folder / "spec.yaml").write_text(yaml.safe_dump(raw))
    return mmkeras.load_spec(folder / "spec.yaml")
