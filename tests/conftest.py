"""Shared tiny fixtures. Tests use tiny shapes and the generated `tiny` dataset."""
from __future__ import annotations

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
