"""Fixtures of the data tests (helpers live in data_helpers.py)."""
from __future__ import annotations

import pytest
from data_helpers import CLASSES, good_row


@pytest.fixture
def good_rows(tmp_path):
    """Three good rows written under tmp_path."""
    return [good_row(tmp_path, i, CLASSES[i % 2]) for i in range(3)]
