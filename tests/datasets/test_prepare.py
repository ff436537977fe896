"""Building a spec's dataset: into place whole, once, and never over a user's files."""
from __future__ import annotations

import pytest

import mmkeras
from mmkeras.datasets import READY_MARKER


def test_a_build_never_replaces_a_folder_of_other_files(tiny_spec, tmp_path):
    spec = tiny_spec.replace(data_dir=tmp_path / "mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my own data")
    with pytest.raises(FileExistsError, match="holds files mmkeras did not build"):
        mmkeras.prepare(spec)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "my own data"


def test_a_build_goes_into_an_empty_or_absent_folder_once(tiny_spec, tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "absent"):
        data_dir = mmkeras.prepare(tiny_spec.replace(data_dir=folder))
        assert (data_dir / READY_MARKER).is_file() and (data_dir / "manifest.csv").is_file()
        stamp = (data_dir / "manifest.csv").stat().st_mtime_ns
        mmkeras.prepare(tiny_spec.replace(data_dir=folder))  # ready: not built again
        assert (data_dir / "manifest.csv").stat().st_mtime_ns == stamp
