"""The built package works on its own: bundled specs and the CLI from a wheel, not the checkout."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# What the sdist is built from; everything else in the checkout stays out of the package.
SOURCES = ("setup.py", "setup.cfg", "MANIFEST.in", "README.md")

# Run inside the installed package, from an empty folder: where mmkeras came
# from, the bundled specs, and what `mmkeras bench` says without benchmarks/.
PROBE = """
import json, sys
import mmkeras
from mmkeras.cli import main
print(json.dumps({
    "mmkeras": mmkeras.__file__,
    "avmnist": str(mmkeras.load_spec("avmnist").path),
    "tiny": mmkeras.load_spec("tiny").feature_names,
    "bench_exit_code": main(["bench", "fusion"]),
}))
"""


def _build(tmp_path: Path) -> tuple[Path, Path]:
    """`python -m build` on a copy of the sources (the checkout is shared): (sdist, wheel)."""
    pytest.importorskip("build", reason='`python -m build` comes with the dev extra: pip install -e ".[dev]"')
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "mmkeras", source / "mmkeras", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    # No isolation: the build uses the installed setuptools and needs no network.
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,), (wheel,) = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    return sdist, wheel


@pytest.mark.slow
def test_installed_wheel_trains_tiny_and_loads_bundled_specs_from_an_empty_folder(tmp_path):
    sdist, wheel = _build(tmp_path)
    assert sdist.name.startswith("mmkeras-") and wheel.name.startswith("mmkeras-")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site),
         str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    bundled = sorted(p.name for p in (site / "mmkeras" / "data_specs").glob("*.yaml"))
    assert bundled == sorted(p.name for p in (REPO_ROOT / "mmkeras" / "data_specs").glob("*.yaml"))

    empty = tmp_path / "empty"
    empty.mkdir()
    # The wheel ahead of the checkout on the path: any read of the checkout would still succeed,
    # so the probe checks where mmkeras and its specs came from.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(REPO_ROOT)]), MMKERAS_CACHE_DIR=str(tmp_path / "cache"))

    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=empty, timeout=120,
                           env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"})  # set: the bench error comes before TF starts
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Path(found["mmkeras"]).is_relative_to(site), found
    assert Path(found["avmnist"]) == site / "mmkeras" / "data_specs" / "avmnist.yaml"
    assert found["tiny"] == ["caption", "picture", "sound"]
    assert found["bench_exit_code"] == 2 and "needs a source checkout" in probe.stderr

    # The console script the wheel installed, as a user runs it.
    command = [str(site / "bin" / "mmkeras"), "train", "tiny", "--epochs", "1", "--output", "run"]
    train = subprocess.run(command, capture_output=True, text=True, cwd=empty, env=env, timeout=600)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert (empty / "run" / "best.keras").is_file() and (empty / "run" / "final.keras").is_file()
    assert (tmp_path / "cache" / "tiny" / "manifest.csv").is_file()  # the installed builder wrote the data
    assert "cudart_stub" not in train.stderr and "absl::InitializeLog" not in train.stderr  # start-up is quiet
