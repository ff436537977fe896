import pytest

from mmkeras.registry import lookup


def test_lookup_returns_entry_and_lists_names_on_typo():
    assert lookup({"concat": 1, "gated": 2}, "gated", "fusion") == 2
    with pytest.raises(ValueError, match=r"Unknown fusion 'gatd'. Expected one of \['concat', 'gated'\]"):
        lookup({"concat": 1, "gated": 2}, "gatd", "fusion")
