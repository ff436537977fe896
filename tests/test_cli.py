"""The `mmkeras` command: fast help, exit codes, one-line errors, and a tiny end-to-end run."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mmkeras.cli import main


def _run(*args, cwd=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "mmkeras.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def test_help_does_not_import_tensorflow():
    code = ("import sys\nfrom mmkeras.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nassert 'tensorflow' not in sys.modules, 'help imported TensorFlow'\nprint('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


@pytest.mark.parametrize("command", ["train", "tune", "evaluate", "export", "predict", "demo", "bench"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: mmkeras" in capsys.readouterr().out


def test_bad_arguments_exit_2():
    assert _run("train").returncode == 2
    assert _run("frobnicate").returncode == 2
    assert _run("train", "tiny", "--fusion").returncode == 2


def test_bad_data_gives_one_line_error_and_exit_2(tmp_path):
    result = _run("train", "no-such-spec")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("mmkeras train: error: No spec file 'no-such-spec'")
    assert "Traceback" not in result.stderr
    result = _run("train", "tiny", "--fusion", "average", "--output", str(tmp_path / "run"))
    assert result.returncode == 2 and "Unknown fusion 'average'" in result.stderr and "Traceback" not in result.stderr
    result = _run("predict", str(tmp_path), "--input", str(tmp_path / "missing.json"))
    assert result.returncode == 2 and "No input file" in result.stderr


def test_tensorflow_start_up_is_quiet_by_default(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "mmkeras.cli", "evaluate", str(tmp_path / "no-run")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 2
    # Only the error: no CUDA probing, oneDNN / CPU-feature notices or absl warnings.
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("mmkeras evaluate: error:")


@pytest.mark.slow
def test_train_evaluate_predict_export_end_to_end(tiny_spec, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "tiny", "--epochs", "1", "--batch-size", "16", "--seed", "7", "--output", str(run)]) == 0
    assert (run / "best.keras").is_file()
    assert "seed: 7" in (run / "config.yaml").read_text()
    assert main(["evaluate", str(run)]) == 0
    report = json.loads((run / "evaluation" / "report.json").read_text())
    assert 0.0 <= report["accuracy"] <= 1.0 and (run / "evaluation" / "reliance.png").stat().st_size > 0
    # Another split gets its own folder: the test report is not overwritten.
    assert main(["evaluate", str(run), "--split", "validation"]) == 0
    assert json.loads((run / "evaluation" / "report.json").read_text()) == report
    assert json.loads((run / "evaluation_validation" / "report.json").read_text())["split"] == "validation"
    manifest_dir = tiny_spec.data_dir
    row = tmp_path / "row.json"
    row.write_text(json.dumps({"caption": "a red ball", "picture": str(manifest_dir / "images/00000.png"),
                               "sound": str(manifest_dir / "audio/00000.wav")}))
    assert main(["predict", str(run), "--input", str(row)]) == 0
    assert main(["export", str(run), "--base-dir", str(tmp_path / "saved")]) == 0
    assert "skew check:   passed on" in capsys.readouterr().out
    assert (tmp_path / "saved").is_dir() and any((tmp_path / "saved").rglob("saved_model.pb"))
    # A finished run is never trained over.
    assert main(["train", "tiny", "--epochs", "1", "--output", str(run)]) == 2


@pytest.mark.slow
def test_demo_trains_evaluates_and_exports_and_a_rerun_shows_the_finished_run(tiny_spec, tmp_path, capsys):
    run, saved = tmp_path / "demo", tmp_path / "saved"
    args = ["demo", "--spec", "tiny", "--epochs", "1", "--seed", "3", "--output", str(run), "--base-dir", str(saved)]
    assert main(args) == 0
    assert "seed: 3" in (run / "config.yaml").read_text()
    first = capsys.readouterr().out
    assert "accuracy" in first and "saved model:" in first and "holds a finished demo run" not in first
    assert (run / "evaluation" / "report.json").is_file()
    assert main(args) == 0  # the README's main command can be run again
    assert "holds a finished demo run" in capsys.readouterr().out
    assert sorted(p.name for p in (saved / "tiny_concat").iterdir() if p.name.isdigit()) == ["1", "2"]
    assert main([*args, "--fusion", "late"]) == 2  # another model never reuses this run


@pytest.mark.slow
def test_train_with_a_run_config_keeps_its_features(tiny_spec, tmp_path):
    import yaml

    from mmkeras.runs import load_run

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"features": ["picture"], "model": {"units": 8, "embed_dim": 8},
                                      "training": {"batch_size": 16}}))
    run = tmp_path / "run"
    assert main(["train", "tiny", "--config", str(config), "--epochs", "1", "--output", str(run)]) == 0
    model, spec = load_run(run)
    assert spec.feature_names == ("picture",)
    names = {tensor.name for tensor in model.inputs}
    assert "picture" in names and not names & {"caption", "sound"}
