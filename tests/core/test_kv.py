"""specroll.core.kv: one KEY=VALUE parser with TOML value semantics for every command-line flag."""

from __future__ import annotations

import pytest

from specroll.core.errors import SpecrollError
from specroll.core.kv import parse_pairs, parse_value


@pytest.mark.parametrize("text, value", [
    ("4", 4), ("-1", -1), ("0.7", 0.7), ("1e-3", 1e-3), ("true", True), ("false", False),
    ("[0.2, 0.5]", [0.2, 0.5]), ('"x y"', "x y"), ("schedule", "schedule"), ("h100-sxm:qwen2.5-7b",
                                                                            "h100-sxm:qwen2.5-7b"),
])
def test_values_mean_what_they_mean_in_a_config_file(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_pairs_and_errors():
    assert parse_pairs(["k=4", "mode = schedule", "k=5"]) == {"k": 5, "mode": "schedule"}
    assert parse_pairs(None) == {}
    for bad in ("k", "=4"):
        with pytest.raises(SpecrollError) as exc:
            parse_pairs([bad], "--drafter-param")
        assert exc.value.field == "--drafter-param" and "name=value" in exc.value.fix
